"""A logger that stays quiet while a handler replays.

A replay re-executes the handler from the top, so without this every log line
written before the last recorded step would be repeated on each attempt.
Records are dropped only while the handler is still inside its recorded
journal; code between the last recorded step and the first new one may log
again, since nothing can tell whether it ran before.
"""

from __future__ import annotations

import logging

from ._replay import is_replaying

__all__ = ["getLogger"]


class _SkipWhileReplaying(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_replaying()


_FILTER = _SkipWhileReplaying()


def getLogger(name: str | None = None) -> logging.Logger:
    """``logging.getLogger(name)``, with records dropped while the handler replays.

    Outside of a handler the logger behaves as usual.
    """
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
