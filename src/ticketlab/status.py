"""Status lines and where a multi-phase command is, shared by the progress bars and the code that has no
bar (the data loaders, the methods' phase loops).

`note` prints one status line (data decoding, a phase resumed or already finished) above any open bar;
`phase` tells the bars opened inside it where the command is ("level 3 of 10") so they show an overall
ETA; `output_mode` sets, for code not given a progress setting, whether notes print. All three are
context-local, so concurrent library users do not mix.
"""

from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from ticketlab import distributed
from ticketlab.logs import logger

Mode = Optional[Union[bool, str]]  # None: a bar on a TTY, lines otherwise; True/"bar"; "lines"; False: nothing


@dataclass(frozen=True)
class Phase:
    """Where a multi-phase command is: ``text`` ("level 3 of 10"), the phases before this one, all phases."""

    text: str
    position: int
    count: int


_PHASE: ContextVar[Optional[Phase]] = ContextVar("ticketlab_phase", default=None)
_MODE: ContextVar[Mode] = ContextVar("ticketlab_progress_mode", default=None)
open_bars = [0]  # progress bars open now (`note` writes above them)


@contextlib.contextmanager
def phase(text: str, position: int, count: int) -> Iterator[Phase]:
    """Bars opened inside are phase ``position`` (0-based) of ``count``, labelled with ``text``."""
    token = _PHASE.set(Phase(text, position, count))
    try:
        yield _PHASE.get()
    finally:
        _PHASE.reset(token)


def current_phase() -> Optional[Phase]:
    return _PHASE.get()


@contextlib.contextmanager
def output_mode(mode: Mode) -> Iterator[None]:
    """`note` calls inside (from code that is not given a progress setting: the data loaders) follow ``mode``."""
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def note(text: str, mode: Mode = "ambient") -> None:
    """One status or progress line: above an open bar; printed on stderr when lines were asked for
    (``mode`` "lines"); else a message of the ``ticketlab`` logger (shown when logging asks for it: the CLI
    does). Nothing when progress output is off (``mode`` False; default: the mode of the enclosing
    `output_mode`) or on a rank other than the writer's."""
    if mode == "ambient":
        mode = _MODE.get()
    if mode is False or not distributed.is_writer():
        return
    if open_bars[0]:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    elif mode == "lines":
        print(text, file=sys.stderr, flush=True)
    else:
        logger.info(text)
