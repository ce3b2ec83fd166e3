"""One error type for bad user input, and a CLI wrapper that prints it as one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class EmpathyRecipesError(Exception):
    """Bad input a user can fix: a stage prints it as one ``error: ...`` line and exits 2."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a script's ``main`` so an :class:`EmpathyRecipesError` becomes one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except EmpathyRecipesError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
