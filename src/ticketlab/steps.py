"""`Steps`: one type for every duration ("40ep", "1000it", "2ep100it").

Training length, milestones, warm-up, rewind points, evaluation and checkpoint intervals are all
`Steps`; they become iteration counts only once the dataset's iterations per epoch are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from ticketlab.errors import ConfigError

_PATTERN = re.compile(r"^\s*(?:(\d+)\s*ep)?\s*(?:(\d+)\s*it)?\s*$")


@dataclass(frozen=True, order=True)
class Steps:
    ep: int = 0
    it: int = 0

    def __post_init__(self):
        if self.ep < 0 or self.it < 0:
            raise ConfigError(f"steps must not be negative, got {self.ep}ep{self.it}it")

    @classmethod
    def parse(cls, text: Union[str, int, "Steps"]) -> "Steps":
        """Read ``"40ep"``, ``"1000it"``, ``"2ep100it"``; a bare integer means iterations."""
        if isinstance(text, Steps):
            return text
        if isinstance(text, bool):
            raise ConfigError(f"not a duration: {text!r}; write e.g. 40ep, 1000it or 2ep100it")
        if isinstance(text, int):
            return cls(0, text)
        match = _PATTERN.match(str(text))
        if not match or not (match.group(1) or match.group(2)):
            if str(text).strip().isdigit():
                return cls(0, int(text))
            raise ConfigError(f"not a duration: {text!r}; write e.g. 40ep, 1000it or 2ep100it")
        return cls(int(match.group(1) or 0), int(match.group(2) or 0))

    def to_iters(self, iters_per_epoch: int) -> int:
        return self.ep * iters_per_epoch + self.it

    @property
    def is_zero(self) -> bool:
        return self.ep == 0 and self.it == 0

    def __str__(self) -> str:
        if self.ep and self.it:
            return f"{self.ep}ep{self.it}it"
        if self.ep:
            return f"{self.ep}ep"
        return f"{self.it}it"


def step_name(iteration: int, iters_per_epoch: int) -> str:
    """A file-name form of an absolute iteration, e.g. ``ep3_it17``."""
    return f"ep{iteration // iters_per_epoch}_it{iteration % iters_per_epoch}"
