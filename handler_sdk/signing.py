"""Signed requests from the proxy to handler endpoints.

When the proxy has a signing key, every request it sends to a handler
endpoint (discovery and invocations) carries::

    x-durable-signature: v1,t=<unix milliseconds>,kid=<key id>,sig=<base64url HMAC-SHA256>

The signature covers the method, the path below the endpoint (``/discover``,
``/invoke/{service}/{handler}``), the timestamp and the SHA-256 of the body::

    v1\\n{METHOD}\\n{path}\\n{timestamp}\\n{hex sha256 of the body}

An endpoint with keys rejects a request that is unsigned, signed with a key it
does not hold, carries a wrong signature, or whose timestamp is further than
the replay window (5 minutes by default) from its clock. It accepts several
keys at once, so a key is rotated without downtime: give the endpoints the new
key next to the old one, switch the proxy to the new key, then drop the old.
The key id is a short hash of the key, so the endpoint knows which key to try.

A request replayed inside the window can at most start an attempt that the
proxy has already given up on: its appends are fenced, so it changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

__all__ = ["SIGNATURE_HEADER", "RequestSigner", "SignatureError", "SignatureVerifier", "keys_from_env"]

SIGNATURE_HEADER = "x-durable-signature"
DEFAULT_WINDOW_MS = 5 * 60 * 1000
_MIN_KEY_BYTES = 16


class SignatureError(Exception):
    """The request is not signed by a key this endpoint holds, or not recently enough."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"durable-kid:" + key).hexdigest()[:12]


def _as_bytes(key: str | bytes) -> bytes:
    data = key.encode() if isinstance(key, str) else key
    if len(data) < _MIN_KEY_BYTES:
        raise ValueError(f"a signing key must be at least {_MIN_KEY_BYTES} bytes long")
    return data


def _payload(method: str, path: str, timestamp_ms: int, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"v1\n{method.upper()}\n{path}\n{timestamp_ms}\n{digest}".encode()


def _mac(key: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode().rstrip("=")


class RequestSigner:
    """Signs requests with one key (the proxy side)."""

    def __init__(self, key: str | bytes) -> None:
        self._key = _as_bytes(key)
        self._kid = key_id(self._key)

    def signature(self, method: str, path: str, body: bytes, timestamp_ms: int) -> str:
        sig = _mac(self._key, _payload(method, path, timestamp_ms, body))
        return f"v1,t={timestamp_ms},kid={self._kid},sig={sig}"


class SignatureVerifier:
    """Checks signatures against any of several keys (the endpoint side)."""

    def __init__(self, keys: Sequence[str | bytes], *, window_ms: int = DEFAULT_WINDOW_MS) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = {key_id(k): k for k in (_as_bytes(key) for key in keys)}
        self._window_ms = window_ms

    def verify(self, header: str | None, method: str, path: str, body: bytes, now_ms: int) -> None:
        if not header:
            raise SignatureError(f"the request is not signed (no {SIGNATURE_HEADER} header)")
        fields: dict[str, str] = {}
        version, _, rest = header.partition(",")
        for part in rest.split(","):
            name, _, value = part.partition("=")
            fields[name.strip()] = value.strip()
        if version.strip() != "v1" or not {"t", "kid", "sig"} <= fields.keys() or not _is_timestamp(fields["t"]):
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
        key = self._keys.get(fields["kid"])
        if key is None:
            raise SignatureError(f"the request is signed with key {fields['kid']}, which this endpoint does not hold")
        timestamp = int(fields["t"])
        if abs(now_ms - timestamp) > self._window_ms:
            raise SignatureError(
                f"the signature's timestamp is {abs(now_ms - timestamp) // 1000} s away from this endpoint's clock "
                f"(the window is {self._window_ms // 1000} s)"
            )
        expected = _mac(key, _payload(method, path, timestamp, body))
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a mismatch).
        if not hmac.compare_digest(expected.encode(), fields["sig"].encode()):
            raise SignatureError("the signature does not match the request")


def _is_timestamp(text: str) -> bool:
    """Unix milliseconds in ASCII digits (``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def keys_from_env(variable: str = "DURABLE_SIGNING_KEYS") -> list[str]:
    """Signing keys from a comma-separated environment variable (empty: none)."""
    return [key.strip() for key in os.environ.get(variable, "").split(",") if key.strip()]
