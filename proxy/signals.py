"""Wake-ups for running attempts that wait for a completion (the ``/await`` callback)."""

from __future__ import annotations

import asyncio


class CompletionSignals:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}

    def event(self, invocation_id: str) -> asyncio.Event:
        """The event to wait on; take it before reading the store so that no completion is missed."""
        event = self._events.get(invocation_id)
        if event is None:
            event = self._events[invocation_id] = asyncio.Event()
        self._waiting[invocation_id] = self._waiting.get(invocation_id, 0) + 1
        return event

    def release(self, invocation_id: str) -> None:
        left = self._waiting.get(invocation_id, 0) - 1
        if left <= 0:
            self._waiting.pop(invocation_id, None)
            self._events.pop(invocation_id, None)
        else:
            self._waiting[invocation_id] = left

    def notify(self, invocation_id: str) -> None:
        event = self._events.pop(invocation_id, None)
        self._waiting.pop(invocation_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        """Wake every waiting attempt (each re-reads the store): completions may have gone unheard."""
        for invocation_id in list(self._events):
            self.notify(invocation_id)
