"""Interrupting training the way a kill would, for the tests of resuming."""

from ticketlab.train import Callback


class KillAt(Callback):
    """Raises KeyboardInterrupt right after step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self, state):
        if state.step == self.at:
            raise KeyboardInterrupt


def killing(experiment_class, where):
    """A subclass of an `Experiment` class whose phase with output folder ``out`` is killed at step
    ``kill_at`` (set on the instance) when ``where(out)``."""

    class Killing(experiment_class):
        kill_at = None

        def train_phase(self, out, *args, callbacks=(), **kwargs):
            if self.kill_at is not None and where(out):
                callbacks = [*callbacks, KillAt(self.kill_at)]
            return super().train_phase(out, *args, callbacks=callbacks, **kwargs)

    return Killing
