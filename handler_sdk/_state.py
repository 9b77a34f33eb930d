"""Keyed state as one attempt sees it: a local map, and journaled reads and writes.

The map starts as the committed state the proxy sent (``InvokeRequest.state``),
which already includes every write this invocation journaled, so:

* a replayed read returns the recorded value, never the map: the state may
  hold later writes of this invocation (or, for a shared handler, of others);
* a replayed write is only checked against its entry: the map reflects it;
* a new read is answered from the map and journaled in the background (the
  value is known, and appends commit in index order, so the entry is durable
  before anything journaled later); a new write updates the map and is
  journaled in the background too.

Every method runs synchronously when the handler calls it, in call order,
which is also journal order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ._attempt import Attempt
from .errors import InputError, _AttemptFailed
from .protocol import ClearAllState, ClearState, Failure, GetState, GetStateKeys, JournalEntry, SetState
from .serde import Codec

_NULL = msgspec.Raw(b"null")


class KeyedState:
    """The state of the attempt's key, read and written through the journal."""

    def __init__(self, attempt: Attempt, committed: Mapping[str, msgspec.Raw]) -> None:
        self._attempt = attempt
        self._values: dict[str, bytes] = {name: bytes(value) for name, value in committed.items()}

    def get(self, index: int, name: str, codec: Codec[Any]) -> Any:
        """The value of ``name`` read at ``index``, decoded; ``None`` if it is not set."""
        recorded = self._attempt.replayed(index, GetState(name=name))
        if recorded is not None:
            assert isinstance(recorded, GetState)
            return self._decode(index, name, bytes(recorded.value), codec) if recorded.found else None
        value = self._values.get(name)
        # Decoded before it is journaled: a value that does not fit the type leaves no entry behind.
        decoded = None if value is None else self._decode(index, name, value, codec)
        entry = GetState(name=name, value=_NULL if value is None else msgspec.Raw(value), found=value is not None)
        self._attempt.start_append(index, entry)
        return decoded

    def keys(self, index: int) -> list[str]:
        """The names that are set, read at ``index``."""
        recorded = self._attempt.replayed(index, GetStateKeys())
        if recorded is not None:
            assert isinstance(recorded, GetStateKeys)
            return list(recorded.keys)
        keys = sorted(self._values)
        self._attempt.start_append(index, GetStateKeys(keys=keys))
        return list(keys)

    def set(self, index: int, name: str, value: bytes) -> None:
        if self._write(index, SetState(name=name, value=msgspec.Raw(value))):
            self._values[name] = value

    def clear(self, index: int, name: str) -> None:
        if self._write(index, ClearState(name=name)):
            self._values.pop(name, None)

    def clear_all(self, index: int) -> None:
        if self._write(index, ClearAllState()):
            self._values.clear()

    def _write(self, index: int, entry: JournalEntry) -> bool:
        """Journal a new write (True: apply it to the map); check a replayed one (False: already applied)."""
        if self._attempt.replayed(index, entry) is not None:
            return False
        self._attempt.start_append(index, entry)
        return True

    def _decode(self, index: int, name: str, value: bytes, codec: Codec[Any]) -> Any:
        try:
            return codec.decode(value)
        except InputError as exc:
            message = (
                f"state entry {name!r} (read at journal index {index}) does not decode as {codec.type!r}: {exc.message}"
            )
            reason = _AttemptFailed(Failure(message=message))
            self._attempt.journal.stop(reason)
            raise reason from None
