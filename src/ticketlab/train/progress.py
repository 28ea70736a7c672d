"""Progress output: a tqdm bar on an interactive terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from typing import Dict, Optional, Union

from ticketlab.logs import logger


class Progress:
    def __init__(self, total: int, start: int, label: str, enabled: Optional[Union[bool, str]] = None):
        """``enabled``: None shows a bar on a TTY and plain lines otherwise; True (or "bar") always a bar,
        "lines" always lines, False nothing."""
        self.total, self.label, self.quiet, self.lines = total, label, enabled is False, enabled == "lines"
        self.bar = None
        if enabled in (True, "bar") or (enabled is None and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=label, unit="it", leave=False, dynamic_ncols=True)

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
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def report(self, step: int, results: Dict[str, Dict[str, float]]) -> None:
        parts = [f"{name} acc {100 * r['accuracy']:.2f}" for name, r in results.items()]
        if "train" in results:
            parts.insert(0, f"train loss {results['train']['loss']:.4f}")
        if self.bar is not None:
            self.bar.set_postfix_str(" | ".join(p for p in parts if not p.startswith("train acc")))
        elif not self.quiet:
            line = f"[{self.label}] step {step}/{self.total} | " + " | ".join(parts)
            if self.lines:  # asked for: printed
                print(line, file=sys.stderr, flush=True)
            else:  # the default off a terminal: a message, shown when logging asks for it (the CLI does)
                logger.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
