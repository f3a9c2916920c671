"""One error path for bad input: the command lines print ``error: <message>`` and exit with 2.

Readers raise :class:`InputError` (or one of its subclasses) with a message that names the file,
the line where there is one, and the problem: ``annotations.csv line 34: x2 (40) must be higher
than x1 (50)``. The entry points wrap ``main`` in :func:`reports_input_errors`, so a user sees that
one line and no traceback; any other exception is a bug and keeps its traceback.

The subclasses also derive from the built-in exception a caller would expect (``OSError`` for an
unreadable image, ``FileNotFoundError`` for a missing file), so library code can catch either.
"""

from __future__ import annotations

import functools
import sys

#: The exit status of a command line that stopped on bad input (argparse uses 2 for bad flags).
INPUT_ERROR_STATUS = 2


class InputError(ValueError):
    """Bad input from the user: a malformed row, an unreadable image, a missing file."""


class UnreadableImage(InputError, OSError):
    """An image file that is missing, empty or cannot be decoded."""


class MissingInput(InputError, FileNotFoundError):
    """A file or folder the command needs does not exist (or holds nothing usable)."""


def report(exc: BaseException) -> None:
    """Print ``error: <message>`` on stderr, as argparse does for a bad flag."""
    print(f"error: {exc}", file=sys.stderr, flush=True)


def reports_input_errors(main):
    """Wrap a command line's ``main``: an :class:`InputError` ends it with status 2, no trace."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as exc:
            report(exc)
            raise SystemExit(INPUT_ERROR_STATUS) from None

    return wrapper
