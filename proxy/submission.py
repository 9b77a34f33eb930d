"""Turning a request for an invocation (from a client, or from a handler's call or send) into a new row.

Both paths check the same things before anything is written: the service and
handler exist, the input is JSON of the handler's input type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from handler_sdk.protocol import json_value_decoder

from .errors import BadRequest
from .registry import Registry
from .store.base import NewInvocation

#: The idempotency key of a workflow's ``run``: one per workflow key.
WORKFLOW_RUN_KEY = "run"


def parse_input(body: bytes) -> Any:
    """The JSON value of a request body (empty means null)."""
    if not body.strip():
        return None
    try:
        return json_value_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def new_invocation(
    registry: Registry,
    *,
    invocation_id: str,
    service: str,
    handler: str,
    value: Any,
    key: str | None = None,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
    parent_id: str | None = None,
    parent_index: int | None = None,
    parent_awaits: bool = False,
    run_at_ms: int | None = None,
) -> NewInvocation:
    """A checked ``NewInvocation``; ``NotFound`` or ``BadRequest`` (with a clear message) otherwise."""
    info = registry.handler(service, handler)
    if info.keyed and not key:
        noun = "workflow" if info.service_kind == "workflow" else "virtual object"
        raise BadRequest(f"{service} is a {noun}: address it by key, as {service}/{{key}}/{handler}")
    if not info.keyed and key is not None:
        raise BadRequest(f"{service} is a service, not keyed: call it as {service}/{handler}")
    if value is not None and not info.manifest.takes_input:
        raise BadRequest(f"{service}/{handler} takes no input, got a request body")
    problem = info.validation_error(value) if info.manifest.takes_input else None
    if problem is not None:
        raise BadRequest(f"invalid input for {service}/{handler}: {problem}", code="invalid_input")
    if info.workflow_run:
        idempotency_key = WORKFLOW_RUN_KEY  # a workflow runs once per key
    return NewInvocation(
        id=invocation_id,
        service=service,
        handler=handler,
        key=key,
        input=msgspec.json.encode(value),
        deployment_id=registry.deployment_for(service),
        idempotency_key=idempotency_key,
        headers=headers or {},
        parent_id=parent_id,
        parent_index=parent_index,
        parent_awaits=parent_awaits,
        run_at_ms=run_at_ms,
        exclusive=info.exclusive,
    )


#: The longest ``?delay=`` accepted: 100 years.
MAX_DELAY_MS = 100 * 365 * 86_400_000


def parse_delay_ms(text: str) -> int:
    """``?delay=`` as Restate takes it: ``10s``, ``500ms``, ``1h30m``, ``2d``, or ISO-8601 ``PT10S``."""
    value = text.strip()
    if not value:
        raise BadRequest("delay must not be empty")
    try:
        if value[:1] in ("P", "p"):
            delay_ms = _iso_duration_ms(value.upper())
        else:
            delay_ms = _human_duration_ms(value.lower())
    except (ValueError, OverflowError):  # OverflowError: a number too large for a float
        raise BadRequest(
            f"delay '{text}' is not a duration: use e.g. 10s, 500ms, 1h30m, 2d or ISO-8601 PT10S"
        ) from None
    if delay_ms > MAX_DELAY_MS:
        # The due time must stay a 64-bit millisecond timestamp (SQLite's INTEGER).
        raise BadRequest(f"delay '{text}' is too long: at most {MAX_DELAY_MS // 86_400_000} days")
    return delay_ms


_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _human_duration_ms(value: str) -> int:
    total, number, unit = 0.0, "", ""
    parts: list[tuple[str, str]] = []
    for char in value + " ":
        if char.isdigit() or char == ".":
            if unit:
                parts.append((number, unit))
                number, unit = "", ""
            number += char
        elif char.isalpha():
            unit += char
        elif char == " ":
            if number or unit:
                parts.append((number, unit))
                number, unit = "", ""
        else:
            raise ValueError(value)
    if not parts:
        raise ValueError(value)
    for number, unit in parts:
        if not number or unit not in _UNITS_MS:
            raise ValueError(value)
        total += float(number) * _UNITS_MS[unit]
    return int(total)


def _iso_duration_ms(value: str) -> int:
    # PnDTnHnMnS (weeks, months and years are ambiguous or rare; not accepted).
    if not value.startswith("P") or len(value) < 3:
        raise ValueError(value)
    date_part, _, time_part = value[1:].partition("T")
    total = 0.0
    for section, units in ((date_part, {"D": 86_400_000}), (time_part, {"H": 3_600_000, "M": 60_000, "S": 1_000})):
        number = ""
        for char in section:
            if char.isdigit() or char == ".":
                number += char
            elif char in units and number:
                total += float(number) * units[char]
                number = ""
            else:
                raise ValueError(value)
        if number:
            raise ValueError(value)
    return int(total)
