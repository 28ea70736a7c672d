"""The training loop every method reuses.

`Trainer.fit` trains one model on one `DataBundle` for ``cfg.steps`` (or until a callback asks it to stop)
under a `MaskEnforcer` (all-ones on a dense start), and writes into ``out_dir``: ``metrics.jsonl`` (one
line per evaluation), ``checkpoint.pt`` (resumable, removed at the end, with the one before it kept as
``checkpoint.prev.pt``: a damaged checkpoint resumes from that one, with a warning), ``final.pt`` and
``best.pt`` (model weights at the end and at the best validation accuracy; ``best.pt`` only with
``cfg.keep_weights="all"``) and ``summary.json`` (which lists the weights files kept). An
``out_dir`` that has a summary and the weights it describes is finished: ``fit`` returns it without
training (deleting ``final.pt`` or ``best.pt`` trains the phase again).

The loop keeps everything on the device: no ``.item()`` per step; the running
training loss and accuracy are device tensors read only at evaluations. The accuracy count is taken
over several steps at once (see `RunningStats`), so the bookkeeping adds little to what a bare PyTorch
loop does per step (``bench/trainer_overhead.py`` measures it).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ticketlab import distributed, runlock
from ticketlab.config import TrainConfig
from ticketlab.data import DataBundle, epoch_permutation, iters_per_epoch
from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.io import DamagedFileError, load_torch, move_file, remove_file, save_torch, write_json
from ticketlab.logs import logger
from ticketlab.runfiles import TRAINER_KEYS, read_summary
from ticketlab.sparsity import Mask, MaskEnforcer
from ticketlab.train.accel import Accelerator
from ticketlab.train.callbacks import Callback, StepState
from ticketlab.train.evaluate import evaluate
from ticketlab.train.metrics import MetricsLog
from ticketlab.train.optim import build_optimizer, has_sparse_gradients, lr_schedule, set_lr
from ticketlab.train.progress import Progress
from ticketlab.train.trackers import Tracker

CHECKPOINT, FINAL, BEST, SUMMARY = "checkpoint.pt", "final.pt", "best.pt", "summary.json"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
RETRAIN = "delete it and run the same command again to train that phase again"


def kept_weights(summary: Dict[str, Any]) -> Tuple[str, ...]:
    """The weights files a finished phase's summary says it keeps (summaries before ``weights`` was
    recorded: ``best.pt`` wherever there was a best validation accuracy)."""
    if summary.get("weights") is not None:
        return tuple(summary["weights"])
    return (FINAL, BEST) if summary.get("best_val") else (FINAL,)


def finished(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished phase: a summary and the weights files it describes. A
    summary whose ``final.pt`` (or ``best.pt``) was deleted is removed, so the phase trains again."""
    out_dir = Path(out_dir)
    if not (out_dir / SUMMARY).exists():
        return False
    if all((out_dir / name).exists() for name in kept_weights(read_summary(out_dir / SUMMARY, TRAINER_KEYS)) + (FINAL,)):
        return True
    if distributed.is_writer():
        remove_file(out_dir / SUMMARY)
    return False


def weights_path(folder: Path, checkpoint: str = "final", flag: str = "--checkpoint") -> Path:
    """The file of a finished phase's ``final`` or ``best`` (best-validation) weights. A phase without a
    validation split, or a result that is not trained (Pools, Sup-tickets), has only ``final.pt``: its
    best is its final. One trained with ``--train.keep-weights final`` kept no best weights: an error
    (``flag``: the option that chose ``checkpoint``, for its advice)."""
    folder = Path(folder)
    if checkpoint == "final" or (folder / BEST).exists():
        return folder / (FINAL if checkpoint == "final" else BEST)
    summary = read_summary(folder / SUMMARY) if (folder / SUMMARY).exists() else {}
    if summary.get("best_val") and BEST not in kept_weights(summary):
        raise ConfigError(f"{folder} kept only its final weights (trained with --train.keep-weights final); "
                          f"use {flag} final, or train the run again without that setting")
    if summary.get("best_val"):
        raise CheckpointError(f"{folder / BEST} is missing; run the command that trained it again to train that "
                              f"phase again, or use {flag} final")
    return folder / FINAL


class RunningStats:
    """The running training loss (summed over examples) and count of correct predictions, as device
    scalars, taken many batches at a time.

    A step copies its logits and labels into preallocated buffers (two copies, no allocation, nothing
    held); when they are full (``steps`` batches, fewer if that would exceed ``max_held`` logits), one
    argmax-compare-sum and one ``loss_fn`` over all of them do the counting. The loss is thus the data
    loss of the logits the step trained on (loss terms that callbacks add are not in it). Batching
    matters more than it seems: right after a training step's large kernels each small tensor op costs
    10-20 us on the CPU (its code and data are out of cache), so the straightforward five ops a step
    would add 5% to a LeNet step. Call `flush` before reading ``loss_sum`` or ``correct``; flushing
    happens at fixed points (full buffers, evaluations), and a checkpoint carries the batches held, so a
    resumed run, or one checkpointed at other steps, sums in the same groups as an uninterrupted one.
    """

    def __init__(self, device: torch.device, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] =
                 F.cross_entropy, steps: int = 256, max_held: int = 1 << 21, batch_size: int = 0):
        """``batch_size``: the largest batch to expect; the buffers are sized for it from the start, so a
        run resumed at a partial batch groups its steps as an uninterrupted one does."""
        # float64 (where the device has it) keeps the sum from depending on the grouping
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.loss_fn, self.count, self.steps, self.max_held = loss_fn, 0, steps, max_held
        self.batch_size = batch_size
        self._logits = self._labels = None
        self._rows = self._filled = self._capacity = 0  # rows in use, batches held, batches that fit

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = len(labels)
        buffer = self._logits
        if buffer is None or buffer.shape[1:] != logits.shape[1:] or buffer.dtype != logits.dtype \
                or self._rows + n > len(buffer):
            self._allocate(logits, labels)
        rows = self._rows
        self._logits[rows:rows + n].copy_(logits.detach())
        self._labels[rows:rows + n].copy_(labels)
        self._rows, self._filled = rows + n, self._filled + 1
        self.count += n
        if self._filled == self._capacity:
            self.flush()

    def _allocate(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count what is held, then size the buffers for this batch shape (a larger batch, other
        logits, a first call)."""
        self.flush()
        batch = max(len(labels), self.batch_size)
        per_batch = max(logits[:1].numel() * batch, 1)
        self._capacity = max(1, min(self.steps, self.max_held // per_batch))
        rows = self._capacity * batch
        self._logits = torch.empty((rows, *logits.shape[1:]), dtype=logits.dtype, device=logits.device)
        self._labels = torch.empty(rows, dtype=labels.dtype, device=labels.device)

    def flush(self) -> None:
        rows = self._rows
        if not rows:
            return
        logits, labels = self._logits[:rows], self._labels[:rows]
        with torch.no_grad():
            self.correct.add_((logits.argmax(1) == labels).sum())
            self.loss_sum.add_(self.loss_fn(logits.float(), labels).to(self.loss_sum.dtype), alpha=rows)
        self._rows = self._filled = 0

    def _local(self) -> torch.Tensor:
        self.flush()
        return torch.stack([self.loss_sum.double(), self.correct.double(),
                            torch.tensor(float(self.count), dtype=torch.float64, device=self.loss_sum.device)])

    def read(self) -> Dict[str, float]:
        """Mean loss and accuracy since the last `reset`, over all ranks under torchrun; empty when no
        example was seen (decided on the totals, so every rank agrees)."""
        self.flush()
        if distributed.active():
            loss_sum, correct, count = distributed.all_sum(self._local()).tolist()
        else:
            loss_sum, correct, count = self.loss_sum.item(), self.correct.item(), self.count
        return {"loss": loss_sum / count, "accuracy": correct / count} if count else {}

    def reset(self) -> None:
        self.flush()
        self.loss_sum.zero_(), self.correct.zero_()
        self.count = 0

    def state(self) -> List[Any]:
        """``[loss sum, correct, count, held logits, held labels, batches held]``: the batches not yet
        counted travel with the checkpoint, so where checkpoints fall (``--train.checkpoint-every``)
        cannot change how the loss is grouped, nor its last digits. Under torchrun, after a flush, one
        ``[loss sum, correct, count]`` per rank, in rank order."""
        if distributed.active():
            return [[loss, int(correct), int(count)] for loss, correct, count in
                    distributed.all_gather(self._local()).tolist()]
        rows = self._rows
        held = (self._logits[:rows].cpu().clone(), self._labels[:rows].cpu().clone()) if rows else (None, None)
        return [self.loss_sum.item(), self.correct.item(), self.count, *held, self._filled]

    def load(self, state: Sequence[Any]) -> None:
        """A `state`; from a torchrun checkpoint this rank's own sums, so its later sums group as before."""
        if state and isinstance(state[0], (list, tuple)):
            state = state[distributed.rank()]
        loss_sum, correct, self.count = state[:3]
        self._rows = self._filled = 0
        self.loss_sum.fill_(loss_sum), self.correct.fill_(correct)
        logits, labels, filled = state[3:] if len(state) == 6 else (None, None, 0)  # older checkpoints: 3
        if logits is not None and len(logits):
            device = self.loss_sum.device
            self._allocate(logits[:1].to(device), labels[:1].to(device))
            self._logits[:len(logits)].copy_(logits), self._labels[:len(labels)].copy_(labels)
            self._rows, self._filled = len(labels), filled


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        data: DataBundle,
        cfg: TrainConfig,
        *,
        order_seed: int,
        out_dir: Optional[Path] = None,
        enforcer: Optional[MaskEnforcer] = None,
        callbacks: Sequence[Callback] = (),
        start_step: int = 0,
        loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
        progress: Optional[bool] = None,
        label: str = "train",
        summary_extra: Optional[Dict[str, Any]] = None,
        stop_at: Optional[int] = None,
        lr_at: Optional[Callable[[int], float]] = None,
        optimizer_state: Optional[Dict[str, Any]] = None,
        trackers: Sequence[Tracker] = (),
    ):
        """``enforcer``: the mask to train under (default: all-ones, so callbacks can change it later).
        ``stop_at``: end after this many steps while the schedule keeps ``cfg.steps`` as its length (a
        pre-phase that trains to a rewind point on the full run's schedule). ``lr_at``: the learning rate
        of each step, replacing ``cfg``'s schedule (a method's own schedule). ``optimizer_state``: the
        per-weight state (momentum, Adam moments, step counts) of an optimizer of the same kind, loaded
        before the first step (a phase that continues another's momentum); the hyperparameters stay
        ``cfg``'s. A resumed run takes the checkpoint's state instead. ``trackers``: sent every metric
        record, as phase ``label`` (`ticketlab.train.trackers`)."""
        self.model, self.data, self.cfg = model, data, cfg
        self.order_seed = order_seed
        self.enforcer = enforcer if enforcer is not None else MaskEnforcer(model, Mask.ones(model))
        self.loss_fn = loss_fn or functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing)
        self.callbacks: List[Callback] = list(callbacks)
        names = [cb.name for cb in self.callbacks if cb.stateful]
        if len(set(names)) != len(names):
            raise ValueError(f"stateful callbacks need distinct names for their checkpointed state; got {names}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ipe = iters_per_epoch(len(data.train), cfg.batch_size)
        self.total = cfg.steps.to_iters(self.ipe)
        if stop_at is not None:
            self.total = min(self.total, stop_at)
        self.start_step = start_step
        if not 0 <= start_step <= self.total:
            raise ValueError(f"start step {start_step} lies outside the training length {self.total}")
        self.optimizer = build_optimizer(model.parameters(), cfg, allow_fused=not has_sparse_gradients(model))
        self.initial_optimizer_state = optimizer_state
        self.accel = Accelerator(model, cfg, data.train.x.device)
        self.train_forward = self._distributed_forward() if distributed.active() else self.accel.forward
        self.lr_at = lr_at or lr_schedule(cfg, self.ipe)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl" if self.out_dir else None, trackers, label)
        self.label, self.progress_mode = label, progress if distributed.is_writer() else False
        self.progress: Optional[Progress] = None  # open while `fit` trains (a bar is closed however it ends)
        self.best: Dict[str, Any] = {}
        self.step = start_step
        self.summary_extra = dict(summary_extra or {})

    def _distributed_forward(self) -> Callable:
        """Under torchrun: the training forward through PyTorch DDP, which averages the gradients over
        ranks in the backward pass (evaluation uses the plain module: every rank evaluates the same)."""
        from torch.nn.parallel import DistributedDataParallel

        if self.cfg.batch_size < distributed.world_size():
            raise ConfigError(f"train.batch_size={self.cfg.batch_size} is the global batch and must be at least the "
                              f"number of processes ({distributed.world_size()})")
        device = self.data.train.x.device
        ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(ddp) if self.cfg.compile and device.type == "cuda" else ddp

    # -- public -----------------------------------------------------------------------------------
    def fit(self) -> Dict[str, Any]:
        if self.out_dir is not None and finished(self.out_dir):
            return read_summary(self.out_dir / SUMMARY, TRAINER_KEYS)
        began = time.perf_counter()
        with Progress(self.total, self.start_step, self.label, enabled=self.progress_mode) as self.progress:
            state = self._train()
        return self._finish(time.perf_counter() - began, stopped=state.stop_requested and self.step < self.total)

    def _train(self) -> StepState:
        """Resume or start, then train to the end (or a callback's stop request)."""
        self._running = RunningStats(self.data.train.x.device, self.loss_fn, batch_size=self.cfg.batch_size)
        resumed = self._resume()
        if not resumed and self.initial_optimizer_state is not None:
            self._continue_optimizer(self.initial_optimizer_state)
        self.last_results: Optional[Dict[str, Dict[str, float]]] = None
        state = StepState(self.step, self.step // self.ipe, self.ipe, self.model, self.optimizer, self)
        self.model.train()
        for cb in self.callbacks:
            cb.on_train_start(state)
        if not resumed:
            self.progress.status(self.step, "evaluating the initial model")  # under the bar: it can take a while
            self._evaluate(state)
        self._loop(state)
        if self.last_results is None:  # resumed, and stopped before any step: the figures of where it is
            self._evaluate(state)
        for cb in self.callbacks:
            cb.on_train_end(state)
        return state

    def _continue_optimizer(self, saved: Dict[str, Any]) -> None:
        """Load another phase's optimizer state (a copy: loading may share tensors), keeping this phase's
        hyperparameters (``load_state_dict`` would restore the other phase's momentum, weight decay...)."""
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        ours = self.optimizer.state_dict()["param_groups"]
        try:
            same_kind = [set(g) for g in saved["param_groups"]] == [set(g) for g in ours]
            if same_kind:
                self.optimizer.load_state_dict(copy.deepcopy(saved))
        except (KeyError, ValueError, TypeError):
            same_kind = False
        if not same_kind:
            raise CheckpointError(f"the optimizer state to continue from does not fit this phase's optimizer "
                                  f"({type(self.optimizer).__name__}); continue from a phase with the same optimizer "
                                  "and model")
        for group, values in zip(self.optimizer.param_groups, hyper):
            group.update(values)
        self.enforcer.apply(self.optimizer)

    # -- the loop ---------------------------------------------------------------------------------
    def _loop(self, state: StepState) -> None:
        """Steps from the current one to the end, or to a callback's stop request; between steps the
        epoch-end hooks, evaluations and checkpoints."""
        train_step = self._step_function(state)
        callbacks, progress, ipe, total = self.callbacks, self.progress, self.ipe, self.total
        eval_every = self.cfg.eval_every.to_iters(ipe)
        ckpt_every = self.cfg.checkpoint_every.to_iters(ipe)
        saving = self.out_dir is not None
        while self.step < total and not state.stop_requested:
            train_step(self.step)
            self.step = state.step = self.step + 1
            for cb in callbacks:
                cb.after_step(state)
            if self.step % ipe == 0:
                for cb in callbacks:
                    cb.on_epoch_end(state)
            progress.update()
            if self.step % eval_every == 0 or self.step == total or state.stop_requested:
                self._evaluate(state)
            if saving and self.step % ckpt_every == 0 and self.step < total and not state.stop_requested:
                self._save_checkpoint()

    def _step_function(self, state: StepState) -> Callable[[int], None]:
        """One optimizer step at a given step index, with everything it needs bound once (the loop runs
        it tens of thousands of times; attribute lookups cost more than they seem at 1 ms a step)."""
        opt, enforcer, callbacks, accel = self.optimizer, self.enforcer, self.callbacks, self.accel
        forward, augment, loss_fn, lr_at = self.train_forward, getattr(self.data, "augment", None), self.loss_fn, \
            self.lr_at
        world = distributed.world_size()
        autocast = accel.autocast if accel.dtype is not None else contextlib.nullcontext
        train_x, train_y, n = self.data.train.x, self.data.train.y, len(self.data.train)
        bs, device, ipe, order_seed, running = self.cfg.batch_size, train_x.device, self.ipe, self.order_seed, \
            self._running
        order = [None, -1]  # the epoch's permutation and its epoch
        streamed = hasattr(train_x, "train_batches")  # an image folder decoded by DataLoader workers, ahead
        stream = [None, -1]  # its batch iterator and the step it yields next
        total = self.total

        def train_step(step: int) -> None:
            epoch, offset = divmod(step, ipe)
            if epoch != order[1]:
                order[0], order[1] = epoch_permutation(n, order_seed, epoch, device), epoch
            index = order[0][offset * bs:(offset + 1) * bs]
            if streamed:  # the same examples, decoded (and sharded) by the workers
                if stream[1] != step:
                    stream[0] = train_x.train_batches(order_seed, bs, step, total)
                x, y, stream[1] = next(stream[0]), train_y[index], step + 1
            else:
                x, y = train_x[index], train_y[index]
            if augment is not None:
                x = augment(x, step)
            if world > 1:  # this rank's shard of the global batch, augmented as the whole batch is
                start, end = distributed.shard_bounds(len(index))
                n_global, y, index = len(index), y[start:end], index[start:end]
                x = x if streamed else x[start:end]
            x = accel.prepare_batch(x)
            set_lr(opt, lr_at(step))
            with autocast():
                logits = forward(x)
                loss = loss_fn(logits, y)
                if world > 1:  # DDP averages over ranks: weight each shard's mean by its size
                    loss = loss * (len(y) * world / n_global)
            if callbacks:
                state.step, state.epoch, state.x, state.y, state.index = step, epoch, x, y, index
                state.logits, state.loss = logits, loss
                for cb in callbacks:
                    term = cb.loss_term(state)
                    if term is not None:
                        loss = loss + term
            running.add(logits, y)
            x = index = None  # without callbacks nothing else holds the batch: backward may reuse its memory
            opt.zero_grad(set_to_none=True)
            accel.backward(loss)
            accel.unscale(opt)
            for cb in callbacks:
                cb.after_backward(state)
            enforcer.mask_grads()
            accel.step(opt)
            enforcer.after_step(opt)

        return train_step

    # -- evaluation, checkpoints, summary ------------------------------------------------------------
    def density(self) -> float:
        return self.enforcer.mask.density()

    def _evaluate(self, state: StepState) -> Dict[str, Dict[str, float]]:
        results: Dict[str, Dict[str, float]] = {}
        if distributed.active():  # every rank evaluates the same model: rank 0's, under the same mask
            distributed.broadcast_buffers(self.model)
            distributed.check_same(self.enforcer.mask.digest(), "mask")
        train = self._running.read()
        if train:
            results["train"] = train
            self._running.reset()
        for split_name in ("val", "test"):
            split = getattr(self.data, split_name)
            if split is not None and len(split):
                results[split_name] = evaluate(self.accel.forward, split.x, split.y, autocast=self.accel.autocast,
                                               prepare=self.accel.prepare_batch, mode_of=self.model)
        results = distributed.from_rank0(results)  # every rank decides (best, stop, callbacks) on the same figures
        density = self.density()
        if self.out_dir is not None:  # a removed run stops before its metrics, best or checkpoint are written
            runlock.check_present(self.out_dir, every_rank=True)
        for split_name, values in results.items():
            self.metrics.append(step=self.step, epoch=self.step / self.ipe, split=split_name, density=density, **values)
        self._track_best(results)
        self.progress.report(self.step, results)
        for cb in self.callbacks:
            cb.on_eval(state, results)
        self.last_results = results
        return results

    def _track_best(self, results: Dict[str, Dict[str, float]]) -> None:
        if "val" not in results:
            return
        if not self.best or results["val"]["accuracy"] > self.best["val_accuracy"]:
            self.best = {"step": self.step, "val_accuracy": results["val"]["accuracy"],
                         "test_accuracy": results.get("test", {}).get("accuracy")}
            if self.out_dir is not None and self.cfg.keep_weights == "all":
                save_torch(self.model.state_dict(), self.out_dir / BEST)

    def _save_checkpoint(self) -> None:
        runlock.check_present(self.out_dir, every_rank=True)
        if distributed.is_writer() and (self.out_dir / CHECKPOINT).exists():
            move_file(self.out_dir / CHECKPOINT, self.out_dir / PREVIOUS_CHECKPOINT)
        save_torch({
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "mask": self.enforcer.state_dict(),
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks if cb.stateful},
            "summary_extra": self.summary_extra,
            "best": self.best,
            "metrics_lines": self.metrics.lines,
            "metrics": self.metrics.records,
            "running": self._running.state(),
            "scaler": self.accel.scaler.state_dict() if self.accel.scaler is not None else {},
            "world_size": distributed.world_size(),
        }, self.out_dir / CHECKPOINT)

    def _resume(self) -> bool:
        path, ckpt = self._load_checkpoint()
        if ckpt is None:
            self.metrics.truncate(0)
            return False
        started = int(ckpt.get("world_size", 1))
        if started != distributed.world_size():  # the batch shards and the gradient sums depend on it
            how = f"torchrun --nproc-per-node {started}" if started > 1 else "one process (no torchrun)"
            raise CheckpointError(f"{path} was written by a run on {started} process(es); resume it on {how}, or "
                                  "delete that file to train the phase again")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["mask"]:  # checkpoints of dense runs before the trainer always had a mask: none stored
            self.enforcer.load_state_dict(ckpt["mask"])
        self._restore_callbacks(ckpt["callbacks"], path)
        if self.accel.scaler is not None and ckpt.get("scaler"):
            self.accel.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.best = ckpt["step"], ckpt["best"]
        self.summary_extra.update(ckpt.get("summary_extra", {}))
        if "metrics" in ckpt:
            self.metrics.restore(ckpt["metrics"])
        else:  # written by an older version: only the line count
            self.metrics.truncate(ckpt["metrics_lines"])
        self._running.load(ckpt["running"])
        self.progress.resume_at(self.step)
        return True

    def _load_checkpoint(self) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
        """(path, content) of the latest intact checkpoint: ``checkpoint.pt``, or when that is damaged (or
        gone after a kill between the two writes of a save) the one before it; (None, None) when none."""
        if self.out_dir is None:
            return None, None
        device = next(self.model.parameters()).device
        latest, previous = self.out_dir / CHECKPOINT, self.out_dir / PREVIOUS_CHECKPOINT
        damaged: Optional[DamagedFileError] = None
        if latest.exists():
            try:
                return latest, load_torch(latest, map_location=device, fix=RETRAIN)
            except DamagedFileError as exc:
                if not previous.exists():
                    raise
                damaged = exc
        if not previous.exists():
            return None, None
        try:
            ckpt = load_torch(previous, map_location=device, fix=RETRAIN)
        except DamagedFileError:
            if damaged is None:
                raise
            raise CheckpointError(f"{latest} and {previous.name} beside it are both damaged; delete both and run the "
                                  "same command again to train that phase again") from None
        if damaged is not None and distributed.is_writer():
            logger.warning(f"{damaged.path} is damaged; resuming from the checkpoint before it ({previous.name}, "
                           f"step {ckpt.get('step')})")
        return previous, ckpt

    def _restore_callbacks(self, saved, path: Path) -> None:
        stateful = [cb for cb in self.callbacks if cb.stateful]
        if isinstance(saved, list):  # checkpoints before states were keyed by name: one per callback, in order
            if len(saved) != len(self.callbacks):
                raise CheckpointError(f"{path} holds the state of {len(saved)} callbacks but this phase has "
                                      f"{len(self.callbacks)}; resume with the same method settings, or delete the "
                                      "checkpoint to start the phase again")
            saved = {cb.name: s for cb, s in zip(self.callbacks, saved) if cb.stateful}
        if set(saved) != {cb.name for cb in stateful}:
            raise CheckpointError(f"{path} holds the state of callbacks {sorted(saved)} but this phase has "
                                  f"{sorted(cb.name for cb in stateful)}; resume with the same method settings, "
                                  "or delete the checkpoint to start the phase again")
        for cb in stateful:
            cb.load_state_dict(saved[cb.name])

    def _finish(self, seconds: float, stopped: bool) -> Dict[str, Any]:
        final = {k: v for k, v in self.last_results.items() if k != "train"}
        summary = {
            **self.summary_extra,
            "steps": self.step,
            "start_step": self.start_step,
            "stopped_at": self.step if stopped else None,
            "iters_per_epoch": self.ipe,
            "density": self.density(),
            "kept": {name: int(torch.count_nonzero(keep)) for name, keep in self.enforcer.mask.items()},
            "final": final,
            "final_test_accuracy": final.get("test", {}).get("accuracy"),
            "best_val": self.best or None,
            "test_accuracy_at_best_val": self.best.get("test_accuracy") if self.best else None,
            "train_seconds": round(seconds, 3),
            "weights": [FINAL, BEST] if self.best and self.cfg.keep_weights == "all" else [FINAL],
        }
        if self.out_dir is not None:
            runlock.check_present(self.out_dir, every_rank=True)
            save_torch(self.model.state_dict(), self.out_dir / FINAL)
            write_json(self.out_dir / SUMMARY, summary)
            if distributed.is_writer():
                remove_file(self.out_dir / CHECKPOINT)
                remove_file(self.out_dir / PREVIOUS_CHECKPOINT)
                if BEST not in summary["weights"]:  # one from before a resume that changed keep_weights
                    remove_file(self.out_dir / BEST)
        return summary
