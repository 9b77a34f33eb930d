"""Errors the proxy answers with. Each knows its HTTP status and a stable code.

* ProxyError
  + BadRequest              400 malformed JSON, wrong shape, bad parameter
  + Unauthorized            401
  + Forbidden               403 a callback token that does not match its attempt
  + NotFound                404 unknown service, handler, invocation, deployment
  + MethodNotAllowed        405
  + Conflict                409 a superseded attempt, a journal conflict
  + PayloadTooLarge         413 a body over the configured limit
  + UnsupportedMediaType    415 an unknown protocol version
  + UnprocessableEntity     422 an idempotency key reused with a different request
  + BadGateway              502 a deployment that cannot be discovered
  + ServiceUnavailable      503 the proxy is starting or stopping

The body of every error is ``{"code": ..., "message": ...}`` (``handler_sdk.protocol.ErrorBody``),
with a message that says what is wrong, never a traceback.
"""

from __future__ import annotations

from typing import ClassVar


class ProxyError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]


class BadRequest(ProxyError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ProxyError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ProxyError):
    status_code = 403
    code = "forbidden"


class NotFound(ProxyError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status_code = 405
    code = "method_not_allowed"


class Conflict(ProxyError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ProxyError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ProxyError):
    status_code = 415
    code = "unsupported_media_type"


class UnprocessableEntity(ProxyError):
    status_code = 422
    code = "unprocessable_entity"


class BadGateway(ProxyError):
    status_code = 502
    code = "bad_gateway"


class ServiceUnavailable(ProxyError):
    status_code = 503
    code = "unavailable"
