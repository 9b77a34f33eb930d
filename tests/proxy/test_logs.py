"""Log lines as text or as one JSON object each, and the ``log_format`` setting."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.config import Settings
from proxy.logs import JsonFormatter, configure_logging, formatter_for, uvicorn_log_config


def _record(
    message: str, *args: object, extra: dict[str, object] | None = None, exc_info: Any = None, sinfo: str | None = None
) -> logging.LogRecord:
    logger = logging.getLogger("durable_proxy.invoker")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, message, args, exc_info, extra=extra, sinfo=sinfo
    )


def test_a_json_line_has_time_level_logger_message_and_the_extras() -> None:
    record = _record("attempt %d of %s failed", 2, "inv_1", extra={"invocation_id": "inv_1", "attempt": 2})
    record.created = 1_714_564_800.123456
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2024-05-01T12:00:00.123Z",
        "level": "warning",
        "logger": "durable_proxy.invoker",
        "message": "attempt 2 of inv_1 failed",
        "invocation_id": "inv_1",
        "attempt": 2,
    }


def test_a_json_line_without_extras_has_only_the_four_fields() -> None:
    assert set(json.loads(JsonFormatter().format(_record("hello")))) == {"time", "level", "logger", "message"}


def test_uvicorn_s_coloured_copy_of_its_message_is_left_out() -> None:
    record = _record("Started server process [%d]", 42, extra={"color_message": "Started \x1b[36m%d\x1b[0m"})
    assert json.loads(JsonFormatter().format(record))["message"] == "Started server process [42]"
    assert "color_message" not in json.loads(JsonFormatter().format(record))


def test_an_exception_and_a_stack_stay_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc_info = sys.exc_info()
    record = _record("it broke", exc_info=exc_info, sinfo="Stack (most recent call last):\n  here")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "it broke"
    assert payload["exception"].startswith("Traceback (most recent call last):")
    assert payload["exception"].endswith("ValueError: bad\nvalue")
    assert payload["stack"].endswith("here")


def test_extras_that_json_cannot_encode_are_written_as_text() -> None:
    payload = json.loads(JsonFormatter().format(_record("x", extra={"when": object, "ids": ("a", "b")})))
    assert payload["when"] == "<class 'object'>" and payload["ids"] == ["a", "b"]


def test_the_text_format_is_the_usual_one() -> None:
    record = _record("attempt %d failed", 3, extra={"invocation_id": "inv_1"})
    line = formatter_for("text").format(record)
    assert line.endswith(" WARNING durable_proxy.invoker: attempt 3 failed")
    with pytest.raises(ValueError, match="text or json"):
        formatter_for("xml")


@pytest.fixture
def bare_root() -> Iterator[logging.Logger]:
    """The root logger, whose handlers and level are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_configure_logging_writes_json_lines_at_the_level_asked(bare_root: logging.Logger) -> None:
    stream = io.StringIO()
    bare_root.handlers.clear()  # pytest's capture handler: configure_logging, like basicConfig, keeps existing ones
    configure_logging("warning", "json", stream=stream)
    assert bare_root.level == logging.WARNING
    log = logging.getLogger("durable_proxy.test")
    log.info("not shown")
    log.warning("shown %s", "here", extra={"invocation_id": "inv_9", "attempt": 1})
    (line,) = stream.getvalue().splitlines()
    payload = json.loads(line)
    assert payload["message"] == "shown here" and payload["invocation_id"] == "inv_9" and payload["attempt"] == 1


def test_uvicorn_logs_through_the_root_logger_in_json() -> None:
    assert uvicorn_log_config("json") is None
    config = uvicorn_log_config("text")
    assert config is not None and "uvicorn" in config["loggers"]


def test_the_log_format_setting_comes_from_the_environment_and_is_checked() -> None:
    assert Settings.load(environ={}).log_format == "text"
    assert Settings.load(environ={"DURABLE_PROXY_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.load({"log_format": "text"}, environ={"DURABLE_PROXY_LOG_FORMAT": "json"}).log_format == "text"
    with pytest.raises(ValueError, match="log_format"):
        Settings.load(environ={"DURABLE_PROXY_LOG_FORMAT": "xml"})
