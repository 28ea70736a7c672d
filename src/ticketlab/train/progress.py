"""Progress output: a tqdm bar on an interactive terminal, plain log lines otherwise; inside a
`ticketlab.status.phase`, the bar says which phase it is and the command's overall ETA."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional

from ticketlab import status
from ticketlab.status import Mode, note


def clock(seconds: float) -> str:
    """3725 -> '1:02:05', 65 -> '1:05'."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    def __init__(self, total: int, start: int, label: str, enabled: Mode = None):
        """``enabled``: None shows a bar on a TTY and plain lines otherwise; True (or "bar") always a bar,
        "lines" always lines, False nothing. Inside a `phase`, the label says which phase this is."""
        self.phase = status.current_phase()
        if self.phase is not None:
            label = f"{label} ({self.phase.text})"
        self.total, self.label, self.quiet, self.mode = total, label, enabled is False, enabled
        self.start, self.began = start, time.perf_counter()
        self.bar = None
        if enabled in (True, "bar") or (enabled is None and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=label, unit="it", leave=False, dynamic_ncols=True)
            status.open_bars[0] += 1

    def set_total(self, total: int) -> None:
        """The step at which the phase will end, once a callback knows it (an early stop)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def resume_at(self, step: int) -> None:
        """The phase continues from a checkpoint at ``step``: said once, and the bar starts there."""
        self.start, self.began = step, time.perf_counter()
        self.note(f"resuming {self.label} from step {step} of {self.total}")
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def note(self, text: str) -> None:
        note(text, self.mode)

    def status(self, step: int, text: str) -> None:
        """What the phase is doing before its first figures (the first evaluation): in the bar, or a line."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        else:
            note(f"[{self.label}] step {step}/{self.total} | {text}", self.mode)

    def overall_eta(self, step: int) -> Optional[float]:
        """Seconds left in the whole command, inside a `phase`: this phase's remaining steps and as many
        steps again for each phase after it, at the rate this phase has trained so far."""
        if self.phase is None or step <= self.start:
            return None
        rate = (step - self.start) / max(time.perf_counter() - self.began, 1e-9)
        remaining = (self.total - step) + (self.phase.count - self.phase.position - 1) * self.total
        return max(remaining, 0) / rate

    def report(self, step: int, results: Dict[str, Dict[str, float]]) -> None:
        parts = [f"{name} acc {100 * r['accuracy']:.2f}" for name, r in results.items()]
        if "train" in results:
            parts.insert(0, f"train loss {results['train']['loss']:.4f}")
        eta = self.overall_eta(step)
        if eta is not None:
            parts.append(f"overall ETA {clock(eta)}")
        if self.bar is not None:
            self.bar.set_postfix_str(" | ".join(p for p in parts if not p.startswith("train acc")))
        else:
            note(f"[{self.label}] step {step}/{self.total} | " + " | ".join(parts), self.mode)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            status.open_bars[0] -= 1

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
