from typing import Any

import pytest

from handler_sdk import Context, Service


async def takes_input(ctx: Context, amount: int) -> str:
    return str(amount)


async def no_input(ctx: Context) -> None:
    return None


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "has space", "Ünï"])
def test_service_name_is_validated(name: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        Service(name)


def test_handler_name_is_validated() -> None:
    with pytest.raises(ValueError, match="must match"):
        Service("S").handler(name="not-valid")


def test_decorator_returns_the_function_and_registers_it() -> None:
    service = Service("S")
    assert service.handler()(takes_input) is takes_input
    assert service.handler(name="other")(no_input) is no_input
    assert set(service.handlers) == {"takes_input", "other"}
    assert service.handlers["takes_input"].takes_input
    assert not service.handlers["other"].takes_input
    assert service.handlers["takes_input"].input_codec.decode(b"3") == 3


def test_duplicate_handler_name() -> None:
    service = Service("S")
    service.handler()(takes_input)
    with pytest.raises(ValueError, match="already has a handler named 'takes_input'"):
        service.handler()(takes_input)


def test_sync_function_is_rejected() -> None:
    def sync(ctx: Context) -> None:
        pass

    with pytest.raises(TypeError, match="must be an async function"):
        Service("S").handler()(sync)  # type: ignore[type-var]


async def three(ctx: Context, a: int, b: int) -> None:
    pass


async def none_at_all() -> None:
    pass


async def star(ctx: Context, *args: Any) -> None:
    pass


async def kw_only(ctx: Context, *, amount: int) -> None:
    pass


@pytest.mark.parametrize("fn", [three, none_at_all, star, kw_only])
def test_wrong_arity_is_rejected(fn: Any) -> None:
    with pytest.raises(TypeError, match=r"must take \(ctx\) or \(ctx, input\)"):
        Service("S").handler()(fn)


async def unresolvable(ctx: Context, order: "NoSuchType") -> None:  # type: ignore[name-defined]  # noqa: F821
    pass


def test_unresolvable_annotation_is_rejected() -> None:
    with pytest.raises(TypeError, match="annotations that cannot be resolved"):
        Service("S").handler()(unresolvable)


async def unannotated(ctx, order):  # type: ignore[no-untyped-def]
    return order


def test_missing_annotations_mean_any() -> None:
    service = Service("S")
    service.handler()(unannotated)
    definition = service.handlers["unannotated"]
    assert definition.input_codec.decode(b'{"a":1}') == {"a": 1}
    assert definition.output_codec.json_schema() is None
