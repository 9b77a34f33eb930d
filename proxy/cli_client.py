"""How ``durable-proxy`` talks to a running proxy, and what its exit codes mean.

Every failure becomes a ``CliError`` carrying the exit code a script sees:

==  ===========================================================================
0   success
1   the operation failed, or the target is in the wrong state for it: the proxy
    answered an error other than 404 (its message is printed), or the invocation
    ``attach`` waited for ended failed
2   bad usage: a wrong option or argument, caught before anything is sent
3   the proxy cannot be reached (connection refused, DNS, TLS, no answer in time)
4   not found: the invocation, deployment or service does not exist (404)
5   ``attach --timeout`` ran out before the invocation ended (it goes on)
==  ===========================================================================
"""

from __future__ import annotations

import os
from typing import Any

import httpx

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
NOT_FOUND = 4
TIMED_OUT = 5

DEFAULT_ADMIN_URL = "http://127.0.0.1:9070"
DEFAULT_INGRESS_URL = "http://127.0.0.1:8080"
ADMIN_URL_ENV = "DURABLE_PROXY_ADMIN_URL"
INGRESS_URL_ENV = "DURABLE_PROXY_INGRESS_URL"
ADMIN_TOKEN_ENV = "DURABLE_PROXY_ADMIN_TOKEN"
INGRESS_TOKEN_ENV = "DURABLE_PROXY_INGRESS_TOKEN"


class CliError(Exception):
    """A failure to report on stderr, and the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def admin_url(flag: str | None) -> str:
    return (flag or os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL).rstrip("/")


def ingress_url(flag: str | None) -> str:
    return (flag or os.environ.get(INGRESS_URL_ENV) or DEFAULT_INGRESS_URL).rstrip("/")


def bearer(token_env: str) -> dict[str, str]:
    token = os.environ.get(token_env)
    return {"authorization": f"Bearer {token}"} if token else {}


class ProxyAnswer(CliError):
    """The proxy answered with an error status: its code and message."""

    def __init__(self, status: int, code: str | None, message: str, exit_code: int) -> None:
        super().__init__(message, exit_code)
        self.status = status
        self.code = code


def error_from(response: httpx.Response, what: str, token_env: str) -> ProxyAnswer:
    """The ``CliError`` for an error answer of the proxy, saying ``what`` failed."""
    body = _json_or_none(response)
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = response.text.strip()[:200] or response.reason_phrase
    status = response.status_code
    verb, _, subject = what.rpartition(" ")
    if verb and subject in message:  # "cancel inv_x: invocation inv_x has ended" says it twice
        what = verb
    detail = f"{message} ({status}{f' {code}' if isinstance(code, str) else ''})"
    if status == 404 and not message.startswith("no admin route"):
        return ProxyAnswer(status, _str(code), f"{what}: {detail}", NOT_FOUND)
    if status == 404 or status == 405:
        hint = "; this proxy's admin API does not offer it (is the proxy an older version?)"
        return ProxyAnswer(status, _str(code), f"{what}: {detail}{hint}", FAILED)
    if status == 401:
        hint = f"; set {token_env} to the proxy's token" if token_env not in os.environ else f"; check {token_env}"
        return ProxyAnswer(status, _str(code), f"{what}: {detail}{hint}", FAILED)
    return ProxyAnswer(status, _str(code), f"{what}: {detail}", FAILED)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def transport_error(exc: httpx.HTTPError, what: str, base_url: str) -> CliError:
    """The ``CliError`` for a request that got no answer."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return CliError(f"{what}: '{base_url}' is not a usable URL: {exc}", USAGE)
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"{what}: {base_url} did not answer in time ({type(exc).__name__})", UNREACHABLE)
    reason = str(exc) or type(exc).__name__
    return CliError(f"{what}: cannot reach {base_url}: {reason}", UNREACHABLE)


class AdminClient:
    """The admin API at ``base_url``, with ``$DURABLE_PROXY_ADMIN_TOKEN`` as a bearer token when set."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self._timeout_s = timeout_s

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The JSON the proxy answered (``None`` for an empty body); a ``CliError`` for anything but 2xx."""
        url = self.base_url + path
        try:
            response = httpx.request(
                method,
                url,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=body,
                headers=bearer(ADMIN_TOKEN_ENV),
                timeout=self._timeout_s if timeout_s is None else timeout_s,
            )
        except httpx.InvalidURL as exc:
            raise CliError(f"{what}: '{url}' is not a usable URL: {exc}", USAGE) from None
        except httpx.HTTPError as exc:
            raise transport_error(exc, what, self.base_url) from None
        if response.status_code >= 300:
            raise error_from(response, what, ADMIN_TOKEN_ENV)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{what}: {self.base_url} answered {response.status_code} without JSON; is it the admin API?"
            ) from None

    def get(self, path: str, *, what: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, what=what, params=params)

    def post(self, path: str, *, what: str, body: Any = None) -> Any:
        return self.request("POST", path, what=what, body=body)
