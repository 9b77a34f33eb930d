"""Named crash points: places where a test can make the proxy kill itself with SIGKILL.

A test arms points through the environment of the process it starts::

    DURABLE_CRASH_POINTS="proxy.append.after_commit[,name...]"
    DURABLE_CRASH_ONCE_DIR=/tmp/markers      # optional

An armed point fires once per process lifetime: the process sends itself
SIGKILL exactly there, as a power cut or ``kill -9`` would stop it. With
``DURABLE_CRASH_ONCE_DIR`` a point fires once across restarts (and across
processes sharing the directory): the first to reach it creates the marker
file ``<dir>/<name>`` (``O_EXCL``, holding its pid) and dies; the others go on.

This module owns the ``proxy.*`` names; ``handler_sdk._crashpoints`` owns the
``sdk.*`` names, so one variable can arm both. An unknown ``proxy.*`` name, or
a name in neither namespace, is an error at import: a typo must not silently
disarm a test. Unarmed, ``crash_point`` costs one dict lookup.
The points are listed, with their meaning, in docs/operations.md.
"""

from __future__ import annotations

from handler_sdk._crashpoints import CrashPoints

__all__ = ["POINTS", "crash_point"]

#: Every point of the proxy, with where it sits.
POINTS: dict[str, str] = {
    "proxy.submit.after_commit": "the invocation row is committed, the ingress response not yet sent",
    "proxy.append.before_commit": "an append received and checked, not yet written",
    "proxy.append.after_commit": "the append is committed, the ack not yet sent",
    "proxy.end.after_commit": "an attempt's end (complete/fail) is committed, the waiting client not yet answered",
    "proxy.timer.before_fire": "a due timer popped, its fire not yet committed",
    "proxy.claim.after_commit": "an attempt claimed, the invoke request not yet sent",
}
#: Names of the other package (checked by its own module).
_FOREIGN_PREFIX = "sdk."

_PROXY = CrashPoints(POINTS, foreign_prefix=_FOREIGN_PREFIX, owner="the proxy's")
crash_point = _PROXY.crash_point
_armed_from = _PROXY.armed_from
