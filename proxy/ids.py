"""Invocation and deployment identifiers.

``inv_`` followed by 26 characters of Crockford base32: 48 bits of milliseconds
then 80 random bits, so ids sort by creation time and never collide in practice.
"""

from __future__ import annotations

import os
import re

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_RE = re.compile(r"^(inv|dp)_[0-9a-hjkmnp-tv-z]{26}$")


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int) -> str:
    random_bits = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(now_ms & ((1 << 48) - 1), 10)}{_encode(random_bits, 16)}"


def invocation_id(now_ms: int) -> str:
    return new_id("inv", now_ms)


def deployment_id(now_ms: int) -> str:
    return new_id("dp", now_ms)


def looks_like_invocation_id(value: str) -> bool:
    return bool(_ID_RE.match(value)) and value.startswith("inv_")
