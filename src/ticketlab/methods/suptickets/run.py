"""`ticketlab suptickets`: a `ticketlab dst` run whose last epochs are a cyclic phase of cheap tickets.

One training of ``train.steps`` epochs (E), in the run directory itself, split by `phase_epochs` into P
pre-train epochs and C = M * cycle cyclic ones:

- pre-train: the base DST variant (``--suptickets.base``) with ``dst.*``, under ``train``'s schedule over
  P epochs (set its milestones for P: the reference drops x0.1 at 50% and 75% of P);
- cyclic: the same optimizer and momentum, the triangular rate per iteration (``lr_1`` at each cycle's
  ends, ``lr_2`` mid-cycle), no topology updates (unless ``cyclic_updates``) except one re-exploration at
  each cycle start (drop-and-grow at ``large_death_rate``, growth from the last batch's dense gradient),
  and a cheap ticket at each cycle end, superposed into one model (`Superposition`).

The death rate's cosine runs over all E epochs, as in the reference. Files: the DST run's (``mask_init.pt``,
``masks/``, ``metrics.jsonl`` with "pretrain", "ticket" and "superposed" records), ``pretrain_end.pt``,
``ticket_<k>.pt``, ``superposed_<k>.pt`` and its mask, the training's ``summary.json`` (the last ticket's
figures and every model's accuracies) and ``superposed/summary.json``: the result, the last superposed
model, with the report row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, List

from ticketlab import runlock, seeds
from ticketlab.config import RunConfig, adopt
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, save_torch
from ticketlab.methods.dst.run import DSTRun
from ticketlab.methods.suptickets.config import SupTicketsRunConfig, phase_epochs
from ticketlab.methods.suptickets.superpose import Superposition
from ticketlab.runfiles import REBUILD, read_summary
from ticketlab.runs import SUMMARY, ensure, save_json
from ticketlab.sparsity import Mask
from ticketlab.steps import Steps
from ticketlab.train import Callback, lr_schedule

RESULT = "superposed"


class SupTicketsRun(DSTRun):
    @property
    def variant(self) -> str:
        return self.config.suptickets.base

    @property
    def phases(self):
        """(pre-train epochs, cyclic epochs, tickets)."""
        st = self.config.suptickets
        return phase_epochs(self.config.train.steps.ep, st.cycle, st.cycle_rate)

    def validate(self) -> None:
        steps, st = self.config.train.steps, self.config.suptickets
        if steps.it:
            raise ConfigError(f"suptickets splits whole epochs into phases: give --train.steps in epochs, not {steps}")
        pretrain, cyclic, tickets = self.phases
        if not tickets:
            raise ConfigError(f"{steps.ep} epochs at cycle_rate {st.cycle_rate} leave no cycle of {st.cycle} epochs "
                              "(the reference then trains the base alone: use `ticketlab dst`); raise "
                              "--suptickets.cycle_rate or --train.steps, or lower --suptickets.cycle")
        super().validate()
        gradual = self.gradual()
        if gradual is not None and not st.cyclic_updates and gradual.last_step() > pretrain * self.ipe:
            raise ConfigError(f"gradual pruning ends after the pre-train phase ({pretrain} epochs), where topology "
                              "updates stop: end it sooner with --dst.prune_end")

    # -- the phase's parts ------------------------------------------------------------------------------
    def lr_function(self) -> Callable[[int], float]:
        """The pre-train schedule (``train``'s over P epochs), then the cyclic triangle per iteration."""
        train, st, ipe = self.config.train, self.config.suptickets, self.ipe
        pretrain_end = self.phases[0] * ipe
        pre = lr_schedule(replace(train, steps=Steps(self.phases[0])), ipe)
        cyclic = lr_schedule(replace(train, schedule="cyclic", lr=st.lr_1, cycle_lr=st.lr_2, cycle=Steps(st.cycle),
                                     warmup=Steps(), milestones=()), ipe)
        last = pre(pretrain_end - 1)

        def lr_at(step: int) -> float:
            if step < pretrain_end:
                return pre(step)
            return cyclic(step - pretrain_end) if st.cyclic_lr else last

        return lr_at

    def callbacks(self, superpose: bool = True) -> List[Callback]:
        st, ipe = self.config.suptickets, self.ipe
        pretrain, _, tickets = self.phases
        start, cycle = pretrain * ipe, st.cycle * ipe
        explore = {start + k * cycle: st.large_death_rate for k in range(tickets)} if st.re_explore else {}
        model = self.make_model(0)
        dst = self.callback(model, stop=0 if st.cyclic_updates else start, explore=explore)
        if not superpose:
            return [dst]
        return [dst, Superposition(self.path, self.data, names=self.managed(model), density=self.target_density,
                                   pretrain_end=start, cycle_steps=cycle, tickets=tickets, method=st.superposition,
                                   factor=st.cima_factor, update_bn=st.update_bn, bn_batch=self.config.train.batch_size,
                                   bn_seed=seeds.derive_seed(self.config.seed, "suptickets-bn"))]

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        from ticketlab.methods.dst.run import INIT_MASK
        from ticketlab.methods.experiment import save_mask

        mask = ensure(self.path / INIT_MASK, self.initial_mask, save=save_mask, load=Mask.load)
        trained = self.train_phase(self.path, self.fresh_initial_weights, mask, self.config.train,
                                   order_seed=self.config.order_seed, extra={"init_density": mask.density()},
                                   callbacks=self.callbacks(), lr_at=self.lr_function())
        return ensure(self.path / RESULT / SUMMARY, lambda: self.result(trained), save=save_json,
                      load=lambda p: read_summary(p, fix=REBUILD))

    def result(self, trained: Dict[str, Any]) -> Dict[str, Any]:
        """The last superposed model as the run's result (its test accuracy the final one; the superposed
        model of best validation accuracy gives the test at best validation), its weights as the result
        folder's ``final.pt``."""
        models = [e for e in trained["superposition"] if e["kind"] == "superposed"]
        last = max(models, key=lambda e: e["cycle"])
        save_torch(load_torch(self.path / f"superposed_{last['cycle']}.pt"), self.path / RESULT / "final.pt")
        best = max(models, key=lambda e: (e["val"] if e["val"] is not None else -1, -e["cycle"]))
        variant = f"{self.config.suptickets.superposition}:{self.variant}"
        return {"row": self.row(variant=variant, level=last["cycle"], density=last["density"],
                                metrics="../metrics.jsonl"),
                "density": last["density"], "final_test_accuracy": last["test"], "final": {"val": {"accuracy": last["val"]},
                "test": {"accuracy": last["test"]}}, "test_accuracy_at_best_val": best["test"],
                "best_val": {"cycle": best["cycle"], "val_accuracy": best["val"], "test_accuracy": best["test"]},
                "steps": trained["steps"], "superposition": trained["superposition"]}


@runlock.session()
def run_suptickets(config: RunConfig, ctx) -> tuple:
    """Run one `ticketlab suptickets` experiment; returns (run path, result summary)."""
    run = SupTicketsRun.open(adopt(config, SupTicketsRunConfig), ctx)
    return run.path, run.run()


__all__ = ["SupTicketsRun", "run_suptickets", "RESULT"]
