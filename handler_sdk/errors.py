"""Exceptions of the handler SDK.

Two families, on purpose on different sides of ``Exception``::

    Exception
     └── TerminalError            public: fail the invocation for good, never retried
          ├── InputError          the handler input did not decode (status 400)
          └── InvocationCancelled the invocation was cancelled (status 409)

    BaseException
     └── SdkInternalError         control flow of the SDK: never catch it
          ├── NonDeterminismError the code no longer matches the recorded journal
          ├── _AttemptFailed      a step failed: end this attempt, the proxy retries
          ├── _AttemptFenced      the proxy refused an append: stop this attempt now
          └── _Suspend            the handler waits for a completion: end the attempt, re-invoke later

User code raises ``TerminalError`` to say "retrying cannot help". Everything
under ``SdkInternalError`` derives from ``BaseException`` so that the usual
``except Exception:`` in a handler cannot swallow it and keep running an
attempt that must stop.
"""

from __future__ import annotations

import traceback

from .protocol import JOURNAL_MISMATCH, Failure

__all__ = [
    "InputError",
    "InvocationCancelled",
    "NonDeterminismError",
    "SdkInternalError",
    "TerminalError",
]


class TerminalError(Exception):
    """Raise it to fail the invocation (or a step) without any retry.

    ``status_code`` is HTTP-like; it reaches the caller of the invocation
    through the proxy.
    """

    def __init__(self, message: str, *, status_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class InputError(TerminalError):
    """The handler input does not decode as the handler's declared type.

    Retrying cannot fix a bad request, hence terminal, with status 400.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


class InvocationCancelled(TerminalError):
    """The invocation was cancelled; raised at the handler's next journaled action or await of a durable future.

    It is raised once. A handler may catch it to compensate (its later steps
    are journaled as usual) and then re-raise it, which ends the invocation as
    failed with status 409, or return normally.
    """

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message, status_code=409)


class SdkInternalError(BaseException):
    """Base of the SDK's own control-flow exceptions.

    Do not catch it: it unwinds the handler so the SDK can end the attempt.
    If you must catch ``BaseException``, re-raise this one untouched.
    """


class NonDeterminismError(SdkInternalError):
    """The handler asked for a different step than the journal recorded.

    Replaying cannot continue past that point; the attempt ends and the proxy
    retries it, so a redeploy of the old code (or a fix) can still complete
    the invocation.
    """

    code = JOURNAL_MISMATCH

    def __init__(
        self,
        *,
        index: int,
        recorded: tuple[str, str],
        requested: tuple[str, str],
        detail: str | None = None,
    ) -> None:
        message = (
            f"journal mismatch at index {index}: the journal recorded {recorded[0]} '{recorded[1]}', "
            f"the code now asks for {requested[0]} '{requested[1]}'"
        )
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)
        self.index = index
        self.recorded = recorded
        self.requested = requested


class _AttemptFailed(SdkInternalError):
    """A step failed transiently: the attempt ends with a ``Retry`` response."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _AttemptFenced(SdkInternalError):
    """The proxy will not accept appends from this attempt any more.

    ``code`` is 409 when the attempt was superseded (or its token refused) and
    571 when the proxy answered in a way the protocol does not allow.
    """

    def __init__(self, message: str, *, code: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Suspend(SdkInternalError):
    """The handler awaits entries that are not complete: end the attempt as ``Suspended``.

    The proxy re-invokes the handler once any of ``waiting_on`` (journal
    indices) is complete; an empty list asks for an immediate re-invocation.
    """

    def __init__(self, waiting_on: list[int]) -> None:
        super().__init__(f"suspended, waiting on journal indices {waiting_on}")
        self.waiting_on = waiting_on


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: boom"``: the type and message, never the traceback."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_stacktrace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
