"""Output helpers for ``durable-proxy``: aligned tables, short times and values, progress on stderr.

Nothing here talks to the proxy. Times are milliseconds since the epoch (as the
admin API gives them) and are shown in local time; durations are shown in the
largest two units that matter (``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``).
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TextIO

ELLIPSIS = "…"


# --------------------------------------------------------------------------- tables


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """``rows`` under ``headers``, columns aligned with two spaces between them, the last one not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def truncate(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: max(width - 1, 0)] + ELLIPSIS


def short_json(value: Any, width: int = 60) -> str:
    """A JSON value on one line, cut to ``width``."""
    return truncate(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")), width)


def failure_text(failure: Any, width: int = 60) -> str:
    """``{"code": 500, "message": "boom"}`` as ``500 boom``; ``""`` for none."""
    if not isinstance(failure, dict):
        return ""
    code = failure.get("code")
    message = str(failure.get("message", ""))
    return truncate(f"{code} {message}" if code is not None else message, width)


# --------------------------------------------------------------------------- times


def duration(ms: float) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``; negative durations as ``-`` plus that."""
    if ms < 0:
        return "-" + duration(-ms)
    if ms < 1_000:
        return f"{int(ms)}ms"
    seconds = ms / 1_000
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    total = int(seconds)
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def offset(ms: float) -> str:
    """A time relative to another: ``+12ms``, ``+1.5s``."""
    return ("+" if ms >= 0 else "") + duration(ms)


def clock_time(ms: int) -> str:
    """Local wall-clock time to the millisecond: ``2025-05-01 12:00:03.250``."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"2d"``, ``"500ms"`` (or a bare number of seconds) in milliseconds."""
    spec = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", spec):
        return round(float(spec) * 1000)
    if not spec or _DURATION_RE.sub("", spec) != "":
        raise ValueError(f"'{text}' is not a duration; write it like 30s, 10m, 1h30m or 2d")
    return round(sum(float(n) * _UNIT_MS[unit] for n, unit in _DURATION_RE.findall(spec)))


def parse_since(text: str, now: int) -> int:
    """A point in time, in ms since the epoch: a duration ago (``10m``, ``2h``) or an ISO 8601 time
    (``2025-05-01``, ``2025-05-01T12:00``, ``2025-05-01 12:00:00+02:00``; local time without an offset)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"'{text}' is neither a duration (10m, 2h, 1d) nor an ISO 8601 time (2025-05-01T12:00)"
        ) from None
    return int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------- progress on stderr


class Progress:
    """A counter on ``stream``: one line rewritten in place on a terminal; otherwise a line every
    ``every_s`` seconds (none at all for work that is over before then), so logs stay readable."""

    def __init__(
        self,
        render: Callable[[int], str],
        stream: TextIO | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self._stream = stream if stream is not None else sys.stderr
        self._tty = _isatty(self._stream)
        self._every_s = every_s
        self._clock = clock
        self._last = clock()
        self._shown = False

    def update(self, count: int) -> None:
        if self._tty:
            self._stream.write("\r\x1b[2K" + self._render(count))
            self._stream.flush()
            self._shown = True
        elif self._clock() - self._last >= self._every_s:
            self._stream.write(self._render(count) + "\n")
            self._stream.flush()
            self._last = self._clock()

    def close(self) -> None:
        """Clear the line being rewritten, so the final message starts on a fresh line."""
        if self._tty and self._shown:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()
            self._shown = False


class Spinner:
    """While the block runs, a spinner with the time waited and ``status()`` on a terminal ``stream``.
    On anything else it shows nothing. ``status`` is called from the spinner's thread, at most every
    ``status_every_s`` seconds; it must not raise."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(
        self,
        text: str,
        stream: TextIO | None = None,
        status: Callable[[], str | None] | None = None,
        status_every_s: float = 2.0,
    ) -> None:
        self._text = text
        self._stream = stream if stream is not None else sys.stderr
        self._status = status
        self._status_every_s = status_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> Spinner:
        if _isatty(self._stream):
            self._thread = threading.Thread(target=self._run, name="spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._stream.write("\r\x1b[2K")
            self._stream.flush()

    def _run(self) -> None:
        started = time.monotonic()
        status: str | None = None
        next_status = started
        for frame in itertools.cycle(self.FRAMES):
            now = time.monotonic()
            if self._status is not None and now >= next_status:
                status = self._status()
                next_status = time.monotonic() + self._status_every_s
            extra = f", {status}" if status else ""
            self._stream.write(f"\r\x1b[2K{frame} {self._text} ({duration((now - started) * 1000)}{extra})")
            self._stream.flush()
            if self._stop.wait(0.1):
                return


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
