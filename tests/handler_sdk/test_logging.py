import logging

import pytest

from handler_sdk import Context, Service
from handler_sdk.logging import getLogger

from .conftest import MakeEndpoint
from .fakes import invoke, recorded_run

logger = getLogger("tests.handler_sdk.replay")

service = Service("S")


@service.handler()
async def handler(ctx: Context) -> None:
    logger.info("before first")
    await ctx.run("first", lambda: None)
    logger.info("between")
    await ctx.run("second", lambda: None)
    logger.info("after second")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger.name]


async def test_logs_everything_on_a_fresh_run(make_endpoint: MakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert messages(caplog) == ["before first", "between", "after second"]


async def test_drops_records_while_replaying(make_endpoint: MakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    journal = [recorded_run("first"), recorded_run("second")]
    await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal)
    assert messages(caplog) == ["after second"]


def test_logs_normally_outside_a_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logger.info("plain")
    assert messages(caplog) == ["plain"]


def test_filter_is_added_once() -> None:
    assert getLogger(logger.name) is logger
    assert len(logger.filters) == 1
