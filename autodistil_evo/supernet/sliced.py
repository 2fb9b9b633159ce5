"""Sliced weights whose backward writes only their slice.

A subnet computes with the leading block of each full-size weight. Slicing the parameter in autograd
(`weight[:out, :in]`) makes its backward allocate a zero-filled gradient of the full size and copy the
slice's gradient into it, for every member of every step, before autograd adds that to `.grad`. Here the
weight gradient of each elastic linear, LayerNorm and embedding table is computed for the slice alone
and added into the slice of the parameter's `.grad` (allocated once per step, on first use), as
Megatron-LM accumulates fused weights' gradients straight into their main-gradient buffers. The weight
is an input of the autograd function only so that the output requires a gradient; its gradient is
returned as None, since it is already accumulated.

Under autocast the products run in the autocast dtype (with the step's low-precision copies of the weights
where given: `LowPrecisionCopies`) and are accumulated into the fp32 gradient; the LayerNorm runs in fp32,
as autocast runs it. Without a gradient (evaluation, the search) the plain slices run.
"""

import torch
from torch.nn import functional as F


def leading(t: torch.Tensor, sizes) -> torch.Tensor:
    """The leading block of `t` of the given sizes (a view; `t` itself where the sizes are its own)."""
    for dim, n in enumerate(sizes):
        if t.shape[dim] != n:
            t = t.narrow(dim, 0, n)
    return t


def accumulate(param: torch.Tensor, value: torch.Tensor):
    """Add `value` into the leading block of `param.grad`; the first gradient of a full-size block becomes
    `.grad` itself, a smaller one goes into zeros allocated once."""
    if param.grad is None:
        if value.shape == param.shape:
            param.grad = value if value.dtype == param.dtype else value.to(param.dtype)
            return
        param.grad = torch.zeros_like(param)
    leading(param.grad, value.shape).add_(value)


def accumulate_product(param: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """Add `a @ b` into the leading block of `param.grad`: one fused multiply-add into the slice where the
    dtypes agree (a GEMM with beta 1, Megatron-LM's gradient accumulation fusion), not a product and an add."""
    shape = (a.shape[0], b.shape[1])
    if a.dtype != param.dtype or (param.grad is None and shape == param.shape):
        accumulate(param, a @ b)
        return
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    leading(param.grad, shape).addmm_(a, b)


def _device_type(x: torch.Tensor) -> str:
    return x.device.type


def _as(t: torch.Tensor, dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


class _SlicedLinears(torch.autograd.Function):
    """Linears of one input as one product: their weights' slices stacked on the output axis (one linear: its
    slice as it is). Each weight's and bias's gradient goes into its own slice."""

    @staticmethod
    def forward(ctx, x, out_features: int, biases: tuple, lows: tuple, *weights):
        ctx.autocast = torch.is_autocast_enabled(_device_type(x))
        ctx.autocast_dtype = torch.get_autocast_dtype(_device_type(x)) if ctx.autocast else None
        if all(low is not None and low[0].dtype == ctx.autocast_dtype for low in lows):  # the step's copies: no casts
            x, used = _as(x, ctx.autocast_dtype), lows
        else:
            used = tuple(zip(weights, biases))
        ws = [leading(w, (out_features, x.shape[-1])) for w, _ in used]
        bs = [None if b is None else leading(b, (out_features,)) for _, b in used]
        w = ws[0] if len(ws) == 1 else torch.cat(ws)
        b = bs[0] if len(bs) == 1 or bs[0] is None else torch.cat(bs)
        ctx.save_for_backward(x, w)
        ctx.params, ctx.out_features = (weights, biases), out_features
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        (weights, biases), out = ctx.params, ctx.out_features
        part = (lambda t, dim, i: t) if len(weights) == 1 else (lambda t, dim, i: t.narrow(dim, i * out, out))
        with torch.autocast(_device_type(x), dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            grad_x = grad @ _as(w, grad.dtype) if ctx.needs_input_grad[0] else None
            flat_grad, flat_x = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
            grad_t, flat_x = flat_grad.t(), _as(flat_x, flat_grad.dtype)
            grad_b = None if biases[0] is None else flat_grad.sum(0)
            for i, (weight, bias) in enumerate(zip(weights, biases)):
                accumulate_product(weight, part(grad_t, 0, i), flat_x)
                if bias is not None:
                    accumulate(bias, part(grad_b, 0, i))
        return grad_x, None, None, None, *(None for _ in weights)


def sliced_linears(x: torch.Tensor, params: list, out_features: int, lows: list | None = None) -> tuple:
    """F.linear(x, weight[:out_features, :x.shape[-1]], bias[:out_features]) for each (weight, bias) of `params`
    (biases all given or all None), computed as one product (Q, K and V: one GEMM), gradients into the slices.
    `lows`: per pair, copies of (weight, bias) in the autocast dtype, computed with under autocast instead of
    casting the slices at each use (`LowPrecisionCopies`); the gradients still go into the weights and biases."""
    weights, biases = zip(*params)
    if not torch.is_grad_enabled() or not any(w.requires_grad for w in weights):
        return tuple(F.linear(x, leading(w, (out_features, x.shape[-1])), None if b is None else leading(b, (out_features,)))
                     for w, b in params)
    out = _SlicedLinears.apply(x, out_features, biases, tuple(lows or (None,) * len(params)), *weights)
    return (out,) if len(params) == 1 else out.split(out_features, dim=-1)


def sliced_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_features: int,
                  low: tuple | None = None) -> torch.Tensor:
    """`sliced_linears` of one linear."""
    return sliced_linears(x, [(weight, bias)], out_features, [low])[0]


class LowPrecisionCopies:
    """Copies of a set of weights in one low-precision dtype, refreshed in one multi-tensor copy.

    Under autocast each use of an fp32 weight casts it again: every member of a sandwich, forward and
    backward. Refreshed once per optimizer step (the weights do not change between a step's members),
    the copies are cast once. The buffers are kept between refreshes; they are not part of any state."""

    def __init__(self, tensors: list):
        self.tensors, self.copies = tensors, []

    def refresh(self, dtype: torch.dtype) -> list:
        """The copies in `dtype` of the tensors as they are now, in their order."""
        if not self.copies or self.copies[0].dtype != dtype or self.copies[0].device != self.tensors[0].device:
            self.copies = [torch.empty_like(t, dtype=dtype) for t in self.tensors]
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.tensors)
        return self.copies


class _SlicedLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        width = x.shape[-1]
        # fp32 under autocast, as autocast runs layer_norm; else the input's dtype
        low = x.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if low and torch.is_autocast_enabled(_device_type(x)) else x.dtype
        w, b = _as(leading(weight, (width,)), dtype), _as(leading(bias, (width,)), dtype)
        with torch.autocast(_device_type(x), enabled=False):
            xc = _as(x, dtype)
            out, mean, rstd = torch.ops.aten.native_layer_norm(xc, (width,), w, b, eps)
        ctx.save_for_backward(xc, w, b, mean, rstd)
        ctx.params, ctx.input_dtype = (weight, bias), x.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        xc, w, b, mean, rstd = ctx.saved_tensors
        with torch.autocast(_device_type(xc), enabled=False):
            grad_x, grad_w, grad_b = torch.ops.aten.native_layer_norm_backward(
                _as(grad, xc.dtype), xc, (xc.shape[-1],), mean, rstd, w, b, [ctx.needs_input_grad[0], True, True])
        accumulate(ctx.params[0], grad_w)
        accumulate(ctx.params[1], grad_b)
        return None if grad_x is None else _as(grad_x, ctx.input_dtype), None, None, None


def sliced_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """F.layer_norm over x's width with weight[:width] and bias[:width], gradients into the slices."""
    width = x.shape[-1]
    if not torch.is_grad_enabled() or not weight.requires_grad:
        return F.layer_norm(x, (width,), leading(weight, (width,)), leading(bias, (width,)), eps)
    return _SlicedLayerNorm.apply(x, weight, bias, eps)


class _SlicedEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, width: int, padding_idx: int | None):
        ctx.save_for_backward(ids, weight)
        ctx.width, ctx.padding_idx = width, padding_idx
        out = F.embedding(ids, weight)
        return out if width == weight.shape[1] else out.narrow(-1, 0, width)

    @staticmethod
    def backward(ctx, grad):
        ids, weight = ctx.saved_tensors
        width, flat_ids = ctx.width, ids.reshape(-1)
        flat_grad = grad.reshape(-1, width)
        if ctx.padding_idx is not None:  # the padding row's gradient stays zero, as nn.Embedding's does
            flat_grad = flat_grad * (flat_ids != ctx.padding_idx)[:, None].to(flat_grad.dtype)
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        # only the looked-up rows' leading `width` channels: no full-size table gradient per member
        leading(weight.grad, (weight.shape[0], width)).index_put_((flat_ids,), _as(flat_grad, weight.grad.dtype),
                                                                  accumulate=True)
        return None, None, None, None


def sliced_embedding(ids: torch.Tensor, weight: torch.Tensor, width: int, padding_idx: int | None = None) -> torch.Tensor:
    """F.embedding(ids, weight)[..., :width], the gradient into the looked-up rows' leading `width` channels."""
    if not torch.is_grad_enabled() or not weight.requires_grad:
        out = F.embedding(ids, weight)
        return out if width == weight.shape[1] else out.narrow(-1, 0, width)
    return _SlicedEmbedding.apply(ids, weight, width, padding_idx)
