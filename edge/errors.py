"""Errors that are the user's to fix: the CLIs print them as one line, no traceback."""
from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """Bad input, a missing file, a mismatched model: say what and how to fix it."""

    exit_code = 2


def one_line_errors(fn):
    """Decorator for click commands: UserError -> ``Error: ...`` on stderr, its exit code (2)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            msg = " ".join(str(e).split())
            print(f"Error: {msg}", file=sys.stderr)
            sys.exit(e.exit_code)
    return wrapper
