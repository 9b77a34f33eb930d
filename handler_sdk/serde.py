"""JSON codecs for handler inputs, outputs and step results.

One codec per Python type, built once and cached, so the cost of compiling a
msgspec decoder (or a pydantic validator) is paid at registration time and not
on every invocation. msgspec covers Structs, dataclasses, TypedDicts, builtins,
unions and containers; pydantic models are supported when the application uses
pydantic, which is detected through ``sys.modules`` so this module never
imports pydantic itself.
"""

from __future__ import annotations

import abc
import sys
from types import ModuleType
from typing import Any, Final, Generic, TypeVar, get_args

import msgspec

from .errors import InputError

__all__ = ["Codec", "codec_for", "encode_json"]

T = TypeVar("T")


def _pydantic() -> ModuleType | None:
    """The pydantic module if the application imported it, else ``None``."""
    return sys.modules.get("pydantic")


def _enc_hook(value: Any) -> Any:
    """Let msgspec encode pydantic models nested anywhere in a value."""
    pydantic = _pydantic()
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"objects of type {type(value).__name__} cannot be encoded as JSON")


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_json(value: Any) -> bytes:
    """Encode any supported value without knowing its declared type."""
    return _ENCODER.encode(value)


class Codec(abc.ABC, Generic[T]):
    """Decodes and encodes the JSON form of one Python type."""

    def __init__(self, tp: Any) -> None:
        self.type = tp

    @abc.abstractmethod
    def decode(self, data: bytes) -> T:
        """Decode ``data``; a bad payload raises ``InputError`` naming the offending path."""

    def encode(self, value: T) -> bytes:
        """Encode ``value`` to JSON bytes."""
        return _ENCODER.encode(value)

    @abc.abstractmethod
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema advertised in discovery, ``None`` when anything goes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type!r})"


class _MsgspecCodec(Codec[T]):
    def __init__(self, tp: Any) -> None:
        super().__init__(tp)
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(tp)
        # Generating the schema up front doubles as the check that msgspec knows
        # the type: its decoder accepts any class and only fails at decode time.
        self._schema: dict[str, Any] | None = None if tp is Any else msgspec.json.schema(tp)

    def decode(self, data: bytes) -> T:
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise InputError(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InputError(f"malformed JSON: {exc}") from None

    def json_schema(self) -> dict[str, Any] | None:
        return self._schema


def _format_pydantic_error(exc: Any) -> str:
    """Render a pydantic ``ValidationError`` in msgspec's ``... - at `$.path``` style."""
    errors: list[dict[str, Any]] = exc.errors(include_url=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return f"malformed JSON: {errors[0]['msg']}"
    parts = []
    for error in errors:
        path = "$" + "".join(f"[{loc}]" if isinstance(loc, int) else f".{loc}" for loc in error["loc"])
        parts.append(f"{error['msg']} - at `{path}`")
    return "; ".join(parts)


class _PydanticModelCodec(Codec[T]):
    def __init__(self, tp: Any, pydantic: ModuleType) -> None:
        super().__init__(tp)
        self._validation_error: type[Exception] = pydantic.ValidationError
        self._schema: dict[str, Any] = tp.model_json_schema()

    def decode(self, data: bytes) -> T:
        try:
            result: T = self.type.model_validate_json(data)
        except self._validation_error as exc:
            raise InputError(_format_pydantic_error(exc)) from None
        return result

    def encode(self, value: T) -> bytes:
        if isinstance(value, self.type):
            return value.model_dump_json(by_alias=True).encode()  # type: ignore[no-any-return]
        return super().encode(value)

    def json_schema(self) -> dict[str, Any] | None:
        return self._schema


class _PydanticAdapterCodec(Codec[T]):
    """For types that merely contain pydantic models, such as ``list[Model]``."""

    def __init__(self, tp: Any, pydantic: ModuleType) -> None:
        super().__init__(tp)
        self._validation_error: type[Exception] = pydantic.ValidationError
        self._adapter = pydantic.TypeAdapter(tp)
        self._schema: dict[str, Any] = self._adapter.json_schema()

    def decode(self, data: bytes) -> T:
        try:
            result: T = self._adapter.validate_json(data)
        except self._validation_error as exc:
            raise InputError(_format_pydantic_error(exc)) from None
        return result

    def encode(self, value: T) -> bytes:
        return self._adapter.dump_json(value, by_alias=True)  # type: ignore[no-any-return]

    def json_schema(self) -> dict[str, Any] | None:
        return self._schema


def _mentions_pydantic(tp: Any, pydantic: ModuleType) -> bool:
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return True
    return any(_mentions_pydantic(arg, pydantic) for arg in get_args(tp))


def _build(tp: Any) -> Codec[Any]:
    pydantic = _pydantic()
    if pydantic is not None and _mentions_pydantic(tp, pydantic):
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            return _PydanticModelCodec(tp, pydantic)
        return _PydanticAdapterCodec(tp, pydantic)
    try:
        return _MsgspecCodec(tp)
    except TypeError as exc:
        raise TypeError(f"no JSON codec for {tp!r}: {exc}") from None


_CACHE: dict[Any, Codec[Any]] = {}


def codec_for(tp: Any) -> Codec[Any]:
    """The codec of ``tp``, built on first use and cached.

    ``Any`` decodes plain JSON. Raises ``TypeError`` for types that neither
    msgspec nor pydantic can handle.
    """
    try:
        return _CACHE[tp]
    except KeyError:
        codec = _CACHE[tp] = _build(tp)
        return codec
    except TypeError:  # unhashable annotation: build it every time
        return _build(tp)
