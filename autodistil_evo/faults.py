"""Fault injection for the crash-safety tests: die with SIGKILL, or receive a signal, at a named point.

`AUTODISTIL_EVO_FAULT=<point>:<n>` kills the process when `point` is reached for the n-th unit
(a training step, a checkpoint write, a search generation). `<point>:<n>:<SIGNAL>` sends that
signal instead (e.g. `train-step:2:SIGTERM`, as a scheduler would), and a suffix `@<rank>` limits
the fault to that rank of a multi-process run. Unset, this costs one dict lookup.
"""

import os
import signal


def maybe_die(point: str, n: int):
    spec = os.environ.get("AUTODISTIL_EVO_FAULT")
    if not spec:
        return
    spec, _, rank = spec.partition("@")
    if rank and rank != os.environ.get("RANK", "0"):
        return
    where, _, name = spec.partition(f"{point}:{n}")
    if where or (name and not name.startswith(":")):
        return
    os.kill(os.getpid(), getattr(signal, name[1:]) if name else signal.SIGKILL)
