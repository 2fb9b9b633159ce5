"""Operators dispatched by a piece of work, counted on any device: the launch count of a training step,
checked without a GPU.

Every ATen operator a block dispatches is counted, views and in-place ones included (`total`); on a GPU
most of the others launch a kernel each, so the count tracks launches (and the host time spent issuing
them). `computing` leaves out the views (view, transpose, slice, expand, detach, and `_unsafe_view`,
a reshape that shares storage), which launch nothing: the closer count of kernels.
"""

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """`with OpCounter() as ops: ...`; then `ops.total` and `ops.counts` (per operator, most common first)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        self.views += func.is_view or func.overloadpacket is torch.ops.aten._unsafe_view
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def computing(self) -> int:
        """Operators that are not views."""
        return self.total - self.views
