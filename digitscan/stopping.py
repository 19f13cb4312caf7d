"""Stopping a long job cleanly: Ctrl-C, SIGTERM and SIGHUP become a flag the job checks between steps."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C; what timeout, docker stop and systemd send; a closed terminal."""


class StopRequest:
    """While `installed`, a stop signal sets `requested` and the job stops at its next check, keeping
    what it has done. The signal never raises inside library code (an exception raised in a data
    loader's locks can deadlock its shutdown); a second one raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
