"""Per-attempt callback tokens.

A token is an HMAC of the invocation id and the attempt number under a secret
kept in the database, so any proxy instance on that database can check it
without a lookup, and a token authorises appends to one attempt of one
invocation only. The store's fencing is the second line: a valid token of an
attempt that is no longer current still writes nothing.
"""

from __future__ import annotations

import base64
import hmac


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def token(self, invocation_id: str, attempt: int) -> str:
        digest = hmac.digest(self._secret, f"{invocation_id}:{attempt}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def verify(self, invocation_id: str, attempt: int, token: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a mismatch).
        return hmac.compare_digest(self.token(invocation_id, attempt).encode(), token.encode())
