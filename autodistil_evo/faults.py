"""Fault injection for the crash-safety tests: die with SIGKILL at a named point.

`AUTODISTIL_EVO_FAULT=<point>:<n>` kills the process when `point` is reached for the n-th unit
(a training step, a checkpoint write, a search generation). Unset, this costs one dict lookup.
"""

import os
import signal


def maybe_die(point: str, n: int):
    spec = os.environ.get("AUTODISTIL_EVO_FAULT")
    if spec and spec == f"{point}:{n}":
        os.kill(os.getpid(), signal.SIGKILL)
