import dataclasses
from typing import Annotated, Any, TypedDict

import msgspec
import pydantic
import pytest

from handler_sdk.errors import InputError, TerminalError
from handler_sdk.serde import codec_for, encode_json


class Order(msgspec.Struct):
    id: str
    amount: int


@dataclasses.dataclass
class Refund:
    order_id: str
    amount: int


class Address(TypedDict):
    city: str


class Customer(pydantic.BaseModel):
    name: str
    age: int


def test_input_error_is_terminal_with_status_400() -> None:
    error = InputError("bad")
    assert isinstance(error, TerminalError)
    assert error.status_code == 400


@pytest.mark.parametrize(
    ("tp", "data", "expected"),
    [
        (Order, b'{"id":"o1","amount":3}', Order("o1", 3)),
        (Refund, b'{"order_id":"o1","amount":3}', Refund("o1", 3)),
        (Address, b'{"city":"Oslo"}', {"city": "Oslo"}),
        (int, b"7", 7),
        (str, b'"x"', "x"),
        (int | None, b"null", None),
        (list[Order], b'[{"id":"a","amount":1}]', [Order("a", 1)]),
        (dict[str, int], b'{"a":1}', {"a": 1}),
        (Any, b'{"a":[1,2]}', {"a": [1, 2]}),
        (Customer, b'{"name":"Ann","age":30}', Customer(name="Ann", age=30)),
        (list[Customer], b'[{"name":"Ann","age":30}]', [Customer(name="Ann", age=30)]),
    ],
)
def test_round_trip(tp: Any, data: bytes, expected: Any) -> None:
    codec = codec_for(tp)
    assert codec.decode(data) == expected
    assert codec.decode(codec.encode(expected)) == expected


@pytest.mark.parametrize("tp", [Order, Refund])
def test_validation_error_names_the_path(tp: Any) -> None:
    field = "id" if tp is Order else "order_id"
    with pytest.raises(InputError) as info:
        codec_for(tp).decode(b'{"%s":"o1","amount":"ten"}' % field.encode())
    assert info.value.message == "Expected `int`, got `str` - at `$.amount`"
    assert info.value.status_code == 400


def test_pydantic_validation_error_names_the_path() -> None:
    with pytest.raises(InputError, match=r"- at `\$\.age`"):
        codec_for(Customer).decode(b'{"name":"Ann","age":"old"}')
    with pytest.raises(InputError, match=r"- at `\$\[1\]\.name`"):
        codec_for(list[Customer]).decode(b'[{"name":"A","age":1},{"age":2}]')


@pytest.mark.parametrize("tp", [Order, Customer, Any])
def test_malformed_json(tp: Any) -> None:
    with pytest.raises(InputError, match="^malformed JSON: "):
        codec_for(tp).decode(b"{not json")


def test_meta_constraints_are_kept() -> None:
    with pytest.raises(InputError, match="Expected `int` >= 1"):
        codec_for(Annotated[int, msgspec.Meta(ge=1)]).decode(b"0")


def test_codecs_are_cached() -> None:
    assert codec_for(Order) is codec_for(Order)
    assert codec_for(list[int]) is codec_for(list[int])


def test_unsupported_type() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="no JSON codec"):
        codec_for(Opaque)


def test_schemas() -> None:
    order_schema = codec_for(Order).json_schema()
    assert order_schema is not None
    assert order_schema["$defs"]["Order"]["required"] == ["id", "amount"]
    assert codec_for(int).json_schema() == {"type": "integer"}
    assert codec_for(Any).json_schema() is None
    assert codec_for(Customer).json_schema() == Customer.model_json_schema()


def test_encode_json_handles_nested_pydantic_models() -> None:
    value = {"customer": Customer(name="Ann", age=3), "order": Order("o", 1), "refund": Refund("o", 1)}
    assert msgspec.json.decode(encode_json(value)) == {
        "customer": {"name": "Ann", "age": 3},
        "order": {"id": "o", "amount": 1},
        "refund": {"order_id": "o", "amount": 1},
    }
    with pytest.raises(TypeError):
        encode_json(object())
