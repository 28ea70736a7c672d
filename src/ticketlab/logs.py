"""ticketlab's messages go through the ``logging`` logger ``"ticketlab"`` (and its children).

As a library it stays quiet: the logger has only a `logging.NullHandler` until one's own logging
configuration (``logging.basicConfig(level=logging.INFO)``) or `show_messages` asks for the messages.
The command line calls `show_messages`, which prints each message bare on stderr, as before.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("ticketlab")
logger.addHandler(logging.NullHandler())


class _StderrHandler(logging.Handler):
    """Writes each message alone on the *current* ``sys.stderr`` (which tests and notebooks replace)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  (logging's contract: a handler never raises)
            self.handleError(record)


def show_messages(level: int = logging.INFO) -> None:
    """Print ticketlab's messages of ``level`` and above on stderr (once, however often it is called)."""
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


__all__ = ["logger", "show_messages"]
