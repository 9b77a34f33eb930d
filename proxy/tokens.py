"""Per-attempt callback tokens.

A token is an HMAC of the invocation id and the attempt number under a secret
kept in the database, so any proxy instance on that database can check it
without a lookup, and a token authorises appends to one attempt of one
invocation only. The store's fencing is the second line: a valid token of an
attempt that is no longer current still writes nothing.

Every step of a handler presents its attempt's token, so the tokens of the
attempts in flight are remembered rather than computed again per step.
"""

from __future__ import annotations

import base64
import hmac
from collections import OrderedDict

#: How many (invocation, attempt) tokens are remembered: more than the attempts in flight at once.
_REMEMBERED = 8192


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._known: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def token(self, invocation_id: str, attempt: int) -> str:
        return self._token(invocation_id, attempt).decode()

    def verify(self, invocation_id: str, attempt: int, token: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a mismatch).
        return hmac.compare_digest(self._token(invocation_id, attempt), token.encode())

    def _token(self, invocation_id: str, attempt: int) -> bytes:
        key = (invocation_id, attempt)
        known = self._known.get(key)
        if known is None:
            digest = hmac.digest(self._secret, f"{invocation_id}:{attempt}".encode(), "sha256")
            known = base64.urlsafe_b64encode(digest[:24]).rstrip(b"=")
            self._known[key] = known
            if len(self._known) > _REMEMBERED:
                self._known.popitem(last=False)
        return known
