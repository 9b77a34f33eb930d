"""The SDK's ``Context``: replays recorded steps and journals new ones.

Every step first takes its journal index, synchronously when ``ctx.run`` is
called. A recorded index is replayed (checked against the requested name, its
outcome returned without running the function); a new one runs the function,
journals the outcome through the proxy, and returns only once the proxy
acknowledged it, so nothing the handler does afterwards can depend on a result
that might be lost.
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
import inspect
import traceback
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, get_args, get_origin, get_type_hints

import msgspec

from ._callback import CallbackClient
from ._replay import Journal, entry_kind
from .context import Context, RunOptions
from .errors import InputError, NonDeterminismError, SdkInternalError, TerminalError, _AttemptFailed
from .protocol import AppendRequest, Failure, InvokeRequest, JournalEntry, Run, json_encoder
from .serde import Codec, codec_for
from .step import StepInfo, in_step, running_step

_DEFAULT_OPTIONS = RunOptions()


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: boom"``: the type and message, never the traceback."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_stacktrace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _is_async(fn: Any) -> bool:
    # The second test catches instances whose ``__call__`` is an ``async def``.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(fn.__call__)


def _declared_result(fn: Callable[..., Any]) -> Any:
    """The type ``fn`` declares it returns (awaitables unwrapped), ``Any`` if unknown."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, type):  # a class called as a step builds an instance of itself
        return target
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = target.__call__
    try:
        declared = get_type_hints(target, include_extras=True).get("return", Any)
    except Exception:
        return Any
    if get_origin(declared) in (collections.abc.Awaitable, collections.abc.Coroutine):
        args = get_args(declared)
        return args[-1] if args else Any
    return declared


def _result_codec(fn: Callable[..., Any], type_hint: Any) -> Codec[Any]:
    if type_hint is not None:
        return codec_for(type_hint)
    try:
        return codec_for(_declared_result(fn))
    except TypeError:  # an annotation JSON cannot express: fall back to plain JSON
        return codec_for(Any)


async def _call(fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    """Await async functions in place; run sync ones in a thread, off the event loop."""
    result = fn(*args) if _is_async(fn) else await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):  # a sync callable that returned a coroutine, e.g. a lambda
        result = await result
    return result


async def _call_with_timeout(fn: Callable[..., Any], args: Sequence[Any], timeout: timedelta | None) -> Any:
    if timeout is None:
        return await _call(fn, args)
    seconds = timeout.total_seconds()
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await _call(fn, args)
    except TimeoutError:
        if scope.expired():
            raise TimeoutError(f"timed out after {seconds:g}s") from None
        raise


class InvocationContext(Context):
    """``Context`` of one attempt of one invocation."""

    def __init__(self, *, request: InvokeRequest, journal: Journal, callbacks: CallbackClient) -> None:
        self._request = request
        self._journal = journal
        self._callbacks = callbacks

    @property
    def invocation_id(self) -> str:
        return self._request.invocation_id

    @property
    def attempt(self) -> int:
        return self._request.attempt

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._request.headers)

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        options: RunOptions | None = None,
        type_hint: Any = None,
    ) -> Coroutine[Any, Any, Any]:
        # Not ``async def``: the index must be taken now, in call order, not when
        # the event loop gets around to starting the coroutine.
        if in_step():
            raise RuntimeError(
                f"ctx.run({name!r}) was called inside a step function; steps cannot be nested, "
                "call ctx.run from the handler itself"
            )
        index = self._journal.reserve()
        return self._step(index, name, fn, args, options or _DEFAULT_OPTIONS, type_hint)

    async def _step(
        self,
        index: int,
        name: str,
        fn: Callable[..., Any],
        args: Sequence[Any],
        options: RunOptions,
        type_hint: Any,
    ) -> Any:
        try:
            self._journal.check()
            recorded = self._journal.recorded(index)
            if recorded is not None:
                return self._replay(index, name, recorded, fn, type_hint)
            return await self._execute(index, name, fn, args, options, type_hint)
        except SdkInternalError as exc:
            self._journal.stop(exc)
            raise
        except BaseException as exc:
            if not self._journal.is_committed(index):
                # A hole at ``index`` (cancelled step, SDK bug): later steps must not be journaled.
                message = f"step '{name}' (journal index {index}) ended before its outcome was journaled"
                self._journal.stop(_AttemptFailed(Failure(message=f"{message}: {describe_exception(exc)}")))
            raise

    def _replay(self, index: int, name: str, entry: JournalEntry, fn: Callable[..., Any], type_hint: Any) -> Any:
        if not isinstance(entry, Run) or entry.name != name:
            raise NonDeterminismError(index=index, recorded=(entry_kind(entry), entry.name), requested=("run", name))
        if entry.failure is not None:
            raise TerminalError(entry.failure.message, status_code=entry.failure.code)
        codec = _result_codec(fn, type_hint)
        try:
            return codec.decode(bytes(entry.result))
        except InputError as exc:
            detail = f"the recorded result does not decode as {codec.type!r}: {exc}"
            raise NonDeterminismError(
                index=index, recorded=("run", name), requested=("run", name), detail=detail
            ) from None

    async def _execute(
        self,
        index: int,
        name: str,
        fn: Callable[..., Any],
        args: Sequence[Any],
        options: RunOptions,
        type_hint: Any,
    ) -> Any:
        codec = _result_codec(fn, type_hint)  # before running fn: a bad type_hint must not cost a side effect
        attempt = 1
        while True:
            try:
                with running_step(StepInfo(self.invocation_id, index, name, attempt)):
                    value = await _call_with_timeout(fn, args, options.timeout)
                break
            except TerminalError as exc:
                await self._commit(index, Run(name=name, failure=Failure(code=exc.status_code, message=exc.message)))
                # A fresh error, like every replay will raise, rather than the subclass fn used.
                raise TerminalError(exc.message, status_code=exc.status_code) from exc
            except Exception as exc:
                if options.max_attempts is None:
                    failure = Failure(
                        message=f"step '{name}' failed: {describe_exception(exc)}",
                        stacktrace=format_stacktrace(exc),
                    )
                    raise _AttemptFailed(failure) from exc
                if attempt >= options.max_attempts:
                    message = f"step '{name}' failed after {attempt} attempts: {describe_exception(exc)}"
                    await self._commit(index, Run(name=name, failure=Failure(message=message)))
                    raise TerminalError(message) from exc
            await asyncio.sleep(options.backoff(attempt - 1))
            attempt += 1
        encoded, result = self._round_trip(name, codec, value)
        await self._commit(index, Run(name=name, result=msgspec.Raw(encoded)))
        return result

    @staticmethod
    def _round_trip(name: str, codec: Codec[Any], value: Any) -> tuple[bytes, Any]:
        """Encode the result, and decode it back so this run sees what replays will see."""
        try:
            encoded = codec.encode(value)
            return encoded, codec.decode(encoded)
        except Exception as exc:
            failure = Failure(
                message=f"step '{name}' returned a value that does not round-trip through JSON as "
                f"{codec.type!r}: {describe_exception(exc)}",
                stacktrace=format_stacktrace(exc),
            )
            raise _AttemptFailed(failure) from exc

    async def _commit(self, index: int, entry: Run) -> None:
        request = AppendRequest(
            attempt=self._request.attempt,
            token=self._request.token,
            index=index,
            entry=msgspec.Raw(json_encoder.encode(entry)),
        )
        url = f"{self._request.callback_url}/journal"
        await self._journal.append(index, lambda: self._callbacks.append(url, request))
