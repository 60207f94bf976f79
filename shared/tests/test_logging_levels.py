"""The service log configuration: JSON lines on stdout, below-level lines dropped."""

from __future__ import annotations

import json
import logging
import logging.config

import pytest
import structlog

from loopwise.logging import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_below_the_level_nothing_is_written_and_above_it_every_line_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("svc", log_format="json", level="INFO")
    log = get_logger("t")
    log.debug("hidden", n=1)
    with structlog.contextvars.bound_contextvars(call_id="c-1"):
        log.info("shown", n=2)
    logging.getLogger("librdkafka.svc").debug("foreign hidden")
    logging.getLogger("librdkafka.svc").warning("foreign shown")
    out = lines(capsys)
    assert [o["event"] for o in out] == ["shown", "foreign shown"]
    assert out[0]["call_id"] == "c-1" and out[0]["service"] == "svc" and out[0]["n"] == 2
    assert out[1]["level"] == "warning" and out[1]["logger"] == "librdkafka.svc"

    configure_logging("svc", log_format="json", level="DEBUG")
    get_logger("t2").debug("now shown")
    assert [o["event"] for o in lines(capsys)] == ["now shown"]
