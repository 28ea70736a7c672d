"""Progress output: a tqdm bar on an interactive terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from typing import Dict, Optional


class Progress:
    def __init__(self, total: int, start: int, label: str, enabled: Optional[bool] = None):
        """``enabled``: True/False forces output on or off; None shows a bar on a TTY and lines otherwise."""
        self.total, self.label, self.quiet = total, label, enabled is False
        self.bar = None
        if enabled is not False and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=label, unit="it", leave=False, dynamic_ncols=True)

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
            print(f"[{self.label}] step {step}/{self.total} | " + " | ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
