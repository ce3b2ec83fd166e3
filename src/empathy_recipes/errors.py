"""One error type for bad user input, and a CLI wrapper that prints it as one line."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class EmpathyRecipesError(Exception):
    """Bad input a user can fix: a stage prints it as one ``error: ...`` line and exits 2."""


def _one_line_parser_error(self: argparse.ArgumentParser, message: str):
    """argparse's ``error`` without the usage block: one ``error:`` line (naming the bad argument), exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def one_line_argparse_errors():
    """While active, a bad command-line argument (``--threshold abc``) prints one line instead of the usage."""
    saved = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _one_line_parser_error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = saved  # type: ignore[method-assign]


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a script's ``main`` so an :class:`EmpathyRecipesError` (or a bad argparse argument) becomes one line
    on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            with one_line_argparse_errors():
                return main(*args, **kwargs)
        except EmpathyRecipesError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
