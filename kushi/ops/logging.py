"""The log format of ``kushi serve``: timestamp, level, worker id, logger, message.

One line per event, for example::

    2026-11-26 02:20:00,123 INFO w0 kushi: listening tcp 127.0.0.1:1883

The worker id (``w0`` for a single process, ``sup`` for a supervisor) tells
which process of a multi-worker broker wrote the line. Tests and users find
the real port of a ``:0`` listener by the ``kushi: listening KIND HOST:PORT``
part, so the logger name and the message stay at the end of the line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(worker)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error", "critical")


class WorkerIdFilter(logging.Filter):
    """Stamps every record with the id of the process that wrote it."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def worker_label(worker_id: int | str) -> str:
    """``0`` -> ``"w0"``; a string (e.g. ``"sup"``) is used as it is."""
    return f"w{worker_id}" if isinstance(worker_id, int) else worker_id


def configure_logging(level: str = "info", worker_id: int | str = 0,
                      stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stderr) in the kushi format.

    Called once per process: by the CLI, and by each worker after a fork with
    its own id. Replaces handlers installed before, so calling it again (as a
    forked worker does) changes the worker id rather than doubling lines.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(WorkerIdFilter(worker_label(worker_id)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
