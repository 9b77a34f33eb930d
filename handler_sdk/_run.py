"""``ctx.run`` steps: replay a recorded outcome, or run the function and journal it.

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
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, get_args, get_origin, get_type_hints

import msgspec

from . import _tracing
from ._attempt import Attempt
from ._crashpoints import crash_point
from .context import RunOptions
from .errors import (
    InputError,
    NonDeterminismError,
    SdkInternalError,
    TerminalError,
    _AttemptFailed,
    describe_exception,
    format_stacktrace,
)
from .protocol import Failure, Run
from .serde import Codec, codec_for
from .step import StepInfo, running_step


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
    # Reading the type hints is the dearest part of a step's own bookkeeping, and steps reuse their
    # functions: remember the codec for as long as the function lives.
    try:
        codec = _declared_codecs.get(fn)
    except TypeError:  # not weakly referenceable, or unhashable: work it out each time
        return _codec_of(fn)
    if codec is None:
        codec = _codec_of(fn)
        _declared_codecs[fn] = codec
    return codec


_declared_codecs: weakref.WeakKeyDictionary[Callable[..., Any], Codec[Any]] = weakref.WeakKeyDictionary()


def _codec_of(fn: Callable[..., Any]) -> Codec[Any]:
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


async def run_step(
    attempt: Attempt,
    index: int,
    name: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    options: RunOptions,
    type_hint: Any,
) -> Any:
    """The outcome of the step at ``index``: replayed if recorded, else run and journaled."""
    journal = attempt.journal
    try:
        recorded = attempt.replayed(index, Run(name=name))
        if recorded is not None:
            assert isinstance(recorded, Run)
            return _replay(index, recorded, fn, type_hint)
        if _tracing.ACTIVE.get():
            step = _execute(attempt, index, name, fn, args, options, type_hint)
            return await _tracing.trace_step(attempt.request, index, "run", name, step)
        return await _execute(attempt, index, name, fn, args, options, type_hint)
    except SdkInternalError as exc:
        journal.stop(exc)
        raise
    except BaseException as exc:
        if not journal.is_committed(index):
            # A hole at ``index`` (cancelled step, SDK bug): later steps must not be journaled.
            message = f"step '{name}' (journal index {index}) ended before its outcome was journaled"
            journal.stop(_AttemptFailed(Failure(message=f"{message}: {describe_exception(exc)}")))
        raise


def _replay(index: int, entry: Run, fn: Callable[..., Any], type_hint: Any) -> Any:
    if entry.failure is not None:
        raise TerminalError(entry.failure.message, status_code=entry.failure.code)
    codec = _result_codec(fn, type_hint)
    try:
        return codec.decode(bytes(entry.result))
    except InputError as exc:
        detail = f"the recorded result does not decode as {codec.type!r}: {exc}"
        raise NonDeterminismError(
            index=index, recorded=("run", entry.name), requested=("run", entry.name), detail=detail
        ) from None


async def _execute(
    attempt: Attempt,
    index: int,
    name: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    options: RunOptions,
    type_hint: Any,
) -> Any:
    codec = _result_codec(fn, type_hint)  # before running fn: a bad type_hint must not cost a side effect
    if attempt.journal.always_replay:
        # The attempt ends at the first new entry: a step must not run before the entries ahead of it
        # are committed, or it would run again in the next attempt.
        await attempt.journal.wait_turn(index)
    else:
        # Not before the entries of earlier awakeables, calls and timers are committed: the step may
        # hand out their ids (``ctx.awakeable``'s documented use), and they are unknown until then.
        # Earlier steps still running are not waited for, so concurrent steps stay concurrent.
        await attempt.appended_before(index)
    tries = 1
    crash_point("sdk.step.before_run")
    while True:
        try:
            with running_step(StepInfo(attempt.invocation_id, index, name, tries)):
                value = await _call_with_timeout(fn, args, options.timeout)
            break
        except TerminalError as exc:
            await attempt.append(index, Run(name=name, failure=Failure(code=exc.status_code, message=exc.message)))
            # A fresh error, like every replay will raise, rather than the subclass fn used.
            raise TerminalError(exc.message, status_code=exc.status_code) from exc
        except Exception as exc:
            if options.max_attempts is None:
                failure = Failure(
                    message=f"step '{name}' failed: {describe_exception(exc)}",
                    stacktrace=format_stacktrace(exc),
                )
                raise _AttemptFailed(failure) from exc
            if tries >= options.max_attempts:
                message = f"step '{name}' failed after {tries} attempts: {describe_exception(exc)}"
                await attempt.append(index, Run(name=name, failure=Failure(message=message)))
                raise TerminalError(message) from exc
        await asyncio.sleep(options.backoff(tries - 1))
        tries += 1
    crash_point("sdk.step.after_run")
    encoded, result = _round_trip(name, codec, value)
    await attempt.append(index, Run(name=name, result=msgspec.Raw(encoded)))
    return result


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
