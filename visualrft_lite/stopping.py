"""Ctrl-C and SIGTERM during a run: the first finishes the step and saves, a second aborts.

The first signal only sets `requested`; the loop checks it after each step, saves a
checkpoint and stops with the resume command. A second signal raises KeyboardInterrupt at
once: the step in flight is lost, the last saved checkpoint stays loadable.
"""

from __future__ import annotations

import signal
from typing import Any, Callable


class StopRequests:
    """Context manager that turns SIGINT/SIGTERM into a stop request (main thread only)."""

    def __init__(self, announce: Callable[[str], Any] = lambda _: None) -> None:
        """`announce(signal_name)` runs at the first signal (to say what a second one would lose)."""
        self.requested: str | None = None
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = f"{name} received"
        self.announce(name)

    def __enter__(self) -> StopRequests:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, h in self._previous.items():
            signal.signal(sig, h)
