"""Stop requests from the environment: Ctrl-C, a scheduler's SIGTERM, SLURM's early SIGUSR1.

A long loop (training steps, search generations) runs inside `StopRequest`; the first signal only
sets a flag that the loop reads at its next safe point (after an optimizer step or a generation),
where it saves and returns. A second signal ends the process at once, as that signal would by
default. The process then exits with the signal's conventional code, 128 + its number.
"""

import os
import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


def exit_code(signum: int) -> int:
    """The shell's code for a process ended by `signum` (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1)."""
    return 128 + int(signum)


class StopRequest:
    """Within the block, SIGINT / SIGTERM / SIGUSR1 set `signum` (the first one received) instead of
    killing the process; a second one kills it with that signal's default action."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals, self.signum, self.previous = signals, None, {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self.previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def _handle(self, signum, _frame):
        if self.signum is None:
            self.signum = signum
            return
        signal.signal(signum, signal.SIG_DFL)  # asked twice: stop now, as that signal would by default
        os.kill(os.getpid(), signum)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
