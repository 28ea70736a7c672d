"""`Steps`: one type for every duration ("40ep", "1000it", "2ep100it").

Training length, milestones, warm-up, rewind points, evaluation and checkpoint intervals are all
`Steps`; they become iteration counts only once the dataset's iterations per epoch are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from ticketlab.errors import ConfigError

_PATTERN = re.compile(r"^\s*(?:([0-9]+)\s*ep)?\s*(?:([0-9]+)\s*it)?\s*$")  # ASCII digits: int() refuses "²"
_LIMIT = 2**63 - 1  # a count of steps fits in int64


@dataclass(frozen=True, order=True)
class Steps:
    ep: int = 0
    it: int = 0

    def __post_init__(self):
        if self.ep < 0 or self.it < 0:
            raise ConfigError(f"steps must not be negative, got {self.ep}ep{self.it}it")
        if self.ep > _LIMIT or self.it > _LIMIT:
            raise ConfigError(f"steps must be below 2**63, got {self.ep}ep{self.it}it; write a shorter duration")

    @classmethod
    def parse(cls, text: Union[str, int, "Steps"]) -> "Steps":
        """Read ``"40ep"``, ``"1000it"``, ``"2ep100it"``; a bare integer means iterations."""
        if isinstance(text, Steps):
            return text
        if isinstance(text, bool):
            raise ConfigError(f"not a duration: {text!r}; write e.g. 40ep, 1000it or 2ep100it")
        if isinstance(text, int):
            return cls(0, text)
        text = str(text)
        match = _PATTERN.match(text) if len(text) < 100 else None  # int() refuses 4300 digits
        if not match or not (match.group(1) or match.group(2)):
            if len(text) < 100 and re.fullmatch(r"\s*[0-9]+\s*", text):
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
