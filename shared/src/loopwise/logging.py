"""structlog configuration: JSON in production, console in development, stdlib routed through it.

librdkafka and every other stdlib logger end up in the same structlog pipeline, so one
service writes one log format.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Literal

import structlog

LogFormat = Literal["json", "console"]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def _console_renderer() -> Any:
    # Plain tracebacks: rich ones print local variables, which can hold transcript text or audio.
    return structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )


def logging_dict_config(log_format: LogFormat = "json", level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` that renders every stdlib record through structlog."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if log_format == "json" else _console_renderer()
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": [*_SHARED, structlog.stdlib.ExtraAdder()],
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
    }


def configure_logging(service: str, *, log_format: LogFormat = "json", level: str = "INFO") -> None:
    """Route structlog and the stdlib root logger to stdout in one format."""
    structlog.configure(
        processors=[
            # a debug line below the level is dropped here, before the rest of the chain
            # runs for it (timestamps, context): some sit on every message's path
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_dict_config(log_format, level))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> Any:
    """Return a structlog logger (safe console defaults until `configure_logging` runs)."""
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _console_renderer(),
            ]
        )
    return structlog.get_logger(name)


def librdkafka_logger(service: str) -> logging.Logger:
    """Return the stdlib logger that confluent-kafka's `logger` option writes librdkafka logs to."""
    return logging.getLogger(f"librdkafka.{service}")
