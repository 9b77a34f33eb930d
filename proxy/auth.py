"""Optional bearer tokens for the ingress and the admin API.

With a token configured, a request must carry ``Authorization: Bearer <token>``;
anything else gets 401 with a message. Handlers' callbacks do not use it: each
attempt has its own token (see ``tokens.py``). Health checks stay open, so load
balancers need no secret. The ``Authorization`` header is never stored: the
ingress drops it before it records an invocation's headers.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import Unauthorized
from .http import error_response


def check_bearer(request: Request, token: str | None) -> None:
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this endpoint needs an Authorization: Bearer <token> header")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("the bearer token is not valid")


class BearerAuth:
    """Wraps an ASGI app: every HTTP request must carry the token, but those to ``open_paths`` and to
    paths starting with one of ``open_prefixes`` (each ending with ``/``, e.g. static files)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        open_paths: frozenset[str] = frozenset(),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        if not all(prefix.endswith("/") for prefix in open_prefixes):
            raise ValueError(f"open prefixes must end with '/', got {open_prefixes}")
        self._app = app
        self._token = token
        self._open_paths = open_paths
        self._open_prefixes = open_prefixes

    def _open(self, path: str) -> bool:
        return path in self._open_paths or path.startswith(self._open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token and scope["type"] == "http" and not self._open(scope["path"]):
            try:
                check_bearer(Request(scope), self._token)
            except Unauthorized as exc:
                await error_response(exc, {"www-authenticate": "Bearer"})(scope, receive, send)
                return
        await self._app(scope, receive, send)
