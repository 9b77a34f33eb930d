"""Named crash points: places where a test can make a handler process kill itself with SIGKILL.

A test arms points through the environment of the process it starts::

    DURABLE_CRASH_POINTS="sdk.step.after_run[,name...]"
    DURABLE_CRASH_ONCE_DIR=/tmp/markers      # optional

An armed point fires once per process lifetime: the process sends itself
SIGKILL exactly there, as a power cut or ``kill -9`` would stop it. With
``DURABLE_CRASH_ONCE_DIR`` a point fires once across restarts (and across
processes sharing the directory): the first to reach it creates the marker
file ``<dir>/<name>`` (``O_EXCL``, holding its pid) and dies; the others go on.

This module owns the ``sdk.*`` names; the proxy's ``proxy.crashpoints`` owns
the ``proxy.*`` names, so one variable can arm both. An unknown ``sdk.*``
name, or a name in neither namespace, is an error at import: a typo must not
silently disarm a test. Unarmed, ``crash_point`` costs one dict lookup.
The points are listed, with their meaning, in docs/operations.md.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "CrashPoints", "crash_point"]

#: Every point of the SDK, with where it sits.
POINTS: dict[str, str] = {
    "sdk.step.before_run": "a new step is about to run its function",
    "sdk.step.after_run": "the step's function returned (its side effect happened), its append not yet sent",
    "sdk.append.after_send": "the proxy acknowledged an append, the ack not yet processed",
    "sdk.response.before_send": "the handler finished, its InvokeResponse not yet sent",
}
#: Names of the other package (checked by its own module).
_FOREIGN_PREFIX = "proxy."


class CrashPoints:
    """The armed points of one package (the proxy has its own instance, with its own names)."""

    def __init__(self, points: dict[str, str], *, foreign_prefix: str, owner: str) -> None:
        self.points = points
        self.foreign_prefix = foreign_prefix
        self.owner = owner
        self.armed = self.armed_from(os.environ.get("DURABLE_CRASH_POINTS", ""))
        self.once_dir = os.environ.get("DURABLE_CRASH_ONCE_DIR") or None

    def armed_from(self, value: str) -> dict[str, None]:
        """The points armed by ``DURABLE_CRASH_POINTS=value``; ``ValueError`` on an unknown name."""
        armed: dict[str, None] = {}
        for raw in value.split(","):
            name = raw.strip()
            if not name or name.startswith(self.foreign_prefix):
                continue
            if name not in self.points:
                known = ", ".join(self.points)
                raise ValueError(
                    f"DURABLE_CRASH_POINTS names an unknown crash point {name!r}; {self.owner} are: {known}"
                )
            armed[name] = None
        return armed

    def crash_point(self, name: str) -> None:
        """Kill this process with SIGKILL here if ``name`` is armed (and has not fired yet)."""
        if name in self.armed:
            self._fire(name)

    def _fire(self, name: str) -> None:
        try:
            del self.armed[name]  # once per process
        except KeyError:
            return  # another thread took it
        if self.once_dir is not None:
            os.makedirs(self.once_dir, exist_ok=True)
            try:
                fd = os.open(os.path.join(self.once_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return  # it fired before, here or in another process
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        os.write(2, f"crash point {name}: killing pid {os.getpid()} with SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


_SDK = CrashPoints(POINTS, foreign_prefix=_FOREIGN_PREFIX, owner="the SDK's")
crash_point = _SDK.crash_point
_armed_from = _SDK.armed_from
