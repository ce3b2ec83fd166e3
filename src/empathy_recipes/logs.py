"""One logging setup for every stage: ``[stage] LEVEL message`` lines on stderr, rank-aware, ``--verbose/--quiet``.

A stage script logs through ``logger = logging.getLogger(__name__)`` and, once its arguments are parsed, calls
``setup_logging("quality", args, __name__)``; the core modules log through ``logging.getLogger(__name__)`` under
``empathy_recipes``. Only those loggers get the stage's handler (with ``propagate`` off), so third-party INFO chatter
stays at its own level and distilabel, which replaces the root logger's handlers while a pipeline runs, cannot swallow
a stage's lines. Under ``accelerate``/``torchrun`` only rank 0 logs INFO; the other ranks log warnings and errors.

Bad input is not logged: it stays the one ``error: ...`` line of :mod:`empathy_recipes.errors` (exit 2). A script's
machine-read result (a JSON summary, a report table) is printed on stdout, apart from the log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable

LOG_FORMAT = "[%(stage)s] %(levelname)s %(message)s"
PACKAGE_LOGGER = "empathy_recipes"
# the variables torchrun and accelerate set in every process of a distributed run (RANK: global rank)
RANK_VARIABLES = ("RANK", "LOCAL_RANK")
_configured: set[str] = set()  # the loggers setup_logging gave a handler, for reset_logging


def add_log_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``-v/--verbose`` (DEBUG too) and ``-q/--quiet`` (warnings and errors only), with one help text everywhere."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    group.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    return parser


def process_rank(environ: dict[str, str] | os._Environ[str] | None = None) -> int:
    """This process's rank in a distributed run (``RANK``, else ``LOCAL_RANK``); 0 outside one."""
    environ = os.environ if environ is None else environ
    for name in RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def log_level(verbose: bool = False, quiet: bool = False, rank: int = 0) -> int:
    """The level of a stage's own lines: DEBUG with ``verbose``, WARNING with ``quiet`` or on a rank other than 0."""
    if quiet or rank != 0:
        return logging.WARNING
    return logging.DEBUG if verbose else logging.INFO


class _StageFilter(logging.Filter):
    """Stamps every record with the stage name the format shows."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = self.stage
        return True


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest and tools swap it), not at setup."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property always reads sys.stderr
        pass


def setup_logging(
    stage: str,
    args: argparse.Namespace | None = None,
    *loggers: str,
    verbose: bool | None = None,
    quiet: bool | None = None,
) -> logging.Logger:
    """Configure the package's logger and the script's own (``loggers``, usually ``__name__``) for one stage.

    ``args`` is the parsed namespace (``--verbose/--quiet`` from :func:`add_log_args`); ``verbose``/``quiet`` override
    it. Calling again (another stage in the same process, a test) replaces the previous setup. Returns the package
    logger.
    """
    verbose = bool(getattr(args, "verbose", False)) if verbose is None else verbose
    quiet = bool(getattr(args, "quiet", False)) if quiet is None else quiet
    level = log_level(verbose, quiet, process_rank())
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_StageFilter(stage))
    for name in _unique((PACKAGE_LOGGER, *loggers)):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _CurrentStderrHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
        _configured.add(name)
    return logging.getLogger(PACKAGE_LOGGER)


def reset_logging() -> None:
    """Undo :func:`setup_logging`: the loggers it configured propagate again at no level of their own (tests run
    many stages in one process, and ``caplog`` listens on the root logger)."""
    for name in sorted(_configured):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _CurrentStderrHandler)]:
            logger.removeHandler(old)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    _configured.clear()


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))
