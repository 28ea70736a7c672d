"""Training: the one loop (`Trainer`), its callbacks, optimizers, schedules, evaluation and the state-dict
operations methods share (`weights`)."""

from ticketlab.train.callbacks import Callback, StepState
from ticketlab.train.evaluate import evaluate
from ticketlab.train.metrics import MetricsLog, read_metrics
from ticketlab.train.optim import build_optimizer, lr_schedule
from ticketlab.train.trackers import TensorBoardTracker, Tracker, WandbTracker
from ticketlab.train.trainer import BEST, CHECKPOINT, FINAL, SUMMARY, Trainer, weights_path
from ticketlab.train.weights import average, interpolate, predict, recompute_bn, training_batches

__all__ = ["Callback", "StepState", "Trainer", "evaluate", "build_optimizer", "lr_schedule", "MetricsLog",
           "read_metrics", "CHECKPOINT", "FINAL", "BEST", "SUMMARY", "interpolate", "average", "recompute_bn",
           "training_batches", "predict", "weights_path", "Tracker", "TensorBoardTracker", "WandbTracker"]
