"""The project's own errors: each says what is wrong in one line, naming the file or flag concerned.

The command line catches `DigitscanError` in one place (`cli.main`) and exits with USAGE_ERROR;
anything else is a bug and exits with INTERNAL_ERROR.
"""

from __future__ import annotations

OK = 0
"""Every image was read."""
SOME_UNREADABLE = 1
"""Some images could not be read; the rest were scored and written."""
USAGE_ERROR = 2
"""A usage or set-up error (a `DigitscanError`): nothing was started, or what was done is kept."""
INTERNAL_ERROR = 3
"""An unexpected error: a bug in digitscan or its libraries (the traceback under --debug)."""
INTERRUPTED = 130
"""Ctrl-C, SIGTERM or SIGHUP: what was done is kept, and --resume continues it."""
STDOUT_CLOSED = 141
"""The reader of standard output went away (`| head -1`): stopped quietly, as after SIGPIPE."""


class DigitscanError(Exception):
    """An error digitscan expects and explains: bad input, missing weights or data, a refused flag."""
