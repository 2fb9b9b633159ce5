"""Operators dispatched by a piece of work, counted on any device: the launch count of a training step,
checked without a GPU.

Every ATen operator a block dispatches is counted, views and in-place ones included; on a GPU most of
the others launch a kernel each, so the count tracks launches (and the host time spent issuing them).
"""

import collections

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """`with OpCounter() as ops: ...`; then `ops.total` and `ops.counts` (per operator, most common first)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
