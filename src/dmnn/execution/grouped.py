"""Grouped execution: the N paths of a block as one stack of fused ops (training speed).

Dense execution runs N small convolutions per layer; on CPU their fixed costs make DMNN training
much slower than its static backbone. Here the paths' layers are fused on the fly from the
per-path modules' own parameters, so parameters, ``state_dict`` and the MACs table stay the
per-sub-block ones and the result is eqn 4 itself:

* a conv on the block input (shared by every path): weights concatenated along the output
  channels, one conv C_in → N·C;
* a conv on the stacked per-path features: the same, with ``groups`` multiplied by N (a 3×3 conv
  becomes groups=N, a depthwise one groups=N·C);
* BatchNorm is per channel, so one BN over N·C channels with concatenated affine parameters and
  running statistics equals N separate BNs; in training the updated statistics are written back
  into each path's own buffers and every ``num_batches_tracked`` is incremented;
* the gated sum ``base + Σ_n s_n·y_n`` reads the N channel groups of the stacked output in place
  (:class:`_GatedSum`, with a hand-written backward).

Autograd reaches every per-path parameter through the concatenations and every gate through the
gated sum, with the gradients of dense execution (first order only: no double backward). No
random numbers are drawn. Paths that are not recognised (other layer types or subclasses,
unequal shapes, hooks on a module, BN with ``momentum=None``) get no plan and run dense.

* a closing BatchNorm in training and the gated sum are one op (:mod:`.bn_sum`): the
  normalised N·C_out channels are never written.

What stays slower than the static backbone is inherent to eqn 4 with a BN ending every sub-block:
each path's last conv writes a full C_out-channel map, so that conv's output and its BN
statistics handle N× the memory of the static block's last layer.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.inplace import global_hooks
from ..network.layers import ChannelSlice
from .bn_sum import bn_gated_sum

ACTS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


@dataclass(frozen=True)
class GroupedPlan:
    """How to run a block's paths as one stack: the n-th path's module at every position.

    input_slice: channels [start, stop) of the block input holding the N stacked path inputs
        (expansion-1 MobileNetV2 sub-blocks own consecutive slices), or None when every path
        reads the whole input.
    layers: per position, the N paths' modules (Conv2d, BatchNorm2d, ReLU or ReLU6).
    """

    num_sub_blocks: int
    input_slice: tuple[int, int] | None
    layers: tuple[tuple[nn.Module, ...], ...]


def same_conv(convs: Sequence[nn.Module]) -> bool:
    first = convs[0]
    if type(first) is not nn.Conv2d or first.padding_mode != "zeros":
        return False
    if isinstance(first.padding, str):
        return False
    key = (first.in_channels, first.out_channels, first.kernel_size, first.stride, first.padding,
           first.dilation, first.groups, first.bias is None)
    return all(
        type(c) is nn.Conv2d
        and (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
             c.groups, c.bias is None) == key
        and c.padding_mode == "zeros"
        for c in convs
    )


def same_bn(bns: Sequence[nn.Module]) -> bool:
    first = bns[0]
    if type(first) is not nn.BatchNorm2d:  # a subclass may have its own forward
        return False
    # momentum=None (cumulative average) would need equal counters in every path: leave to dense
    if not (first.affine and first.track_running_stats) or first.momentum is None:
        return False
    key = (first.num_features, first.eps, first.momentum)
    return all(
        type(b) is nn.BatchNorm2d and b.affine and b.track_running_stats
        and (b.num_features, b.eps, b.momentum) == key
        for b in bns
    )


def _contiguous_slices(slices: Sequence[nn.Module]) -> tuple[int, int] | None:
    """[start, stop) if the paths' ChannelSlices tile one channel range in path order."""
    if not all(type(s) is ChannelSlice for s in slices):
        return None
    start = slices[0].start
    stop = start
    for s in slices:
        if s.start != stop or s.stop <= s.start:
            return None
        stop = s.stop
    width = slices[0].stop - slices[0].start
    if any(s.stop - s.start != width for s in slices):
        return None
    return start, stop


def make_plan(paths: Sequence[nn.Module]) -> GroupedPlan | None:
    """A plan for paths of identical conv/BN/act structure, or None (run them dense instead).

    Only exact module types are accepted (a subclass may compute something else), and only
    layouts whose fused form is provably the same function.
    """
    n = len(paths)
    if n < 2 or not all(type(p) is nn.Sequential for p in paths):
        return None
    columns = list(zip(*(list(p) for p in paths), strict=False))
    if any(len(p) != len(columns) for p in paths) or not columns:
        return None
    input_slice = None
    if type(columns[0][0]) is ChannelSlice:
        input_slice = _contiguous_slices(columns[0])
        if input_slice is None:
            return None
        columns = columns[1:]
    stacked = input_slice is not None  # whether the running tensor holds N stacked groups
    last_kind = ""
    for column in columns:
        first = column[0]
        if type(first) is nn.Conv2d:
            if not same_conv(column) or (not stacked and first.groups != 1):
                return None
            stacked, last_kind = True, "conv"
        elif type(first) is nn.BatchNorm2d:
            if not stacked or not same_bn(column):
                return None
            last_kind = "bn"
        elif type(first) in ACTS:
            if not stacked or not all(type(m) is type(first) for m in column):
                return None
            last_kind = "act"
        else:
            return None
    if not stacked or last_kind == "":
        return None
    return GroupedPlan(n, input_slice, tuple(columns))


_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], GroupedPlan | None]] = (
    weakref.WeakKeyDictionary()
)


def _signature(paths: Sequence[nn.Module]) -> tuple[int, ...] | None:
    """Identity of every module in the paths (a plan is reused only while none was replaced), or
    None when a module has hooks: fused ops would skip them (e.g. pruning's forward pre-hooks)."""
    modules = path_modules(paths)
    if hooked(modules):
        return None
    return tuple(id(m) for m in modules)


def path_modules(paths: Sequence[nn.Module]) -> list[nn.Module]:
    """The paths and their layers: what a plan is checked against."""
    return [m for p in paths for m in (p, *p._modules.values())]


def hook_dicts(modules: Sequence[nn.Module]) -> list[dict]:
    """The forward and backward hook dicts of ``modules``: a module keeps its dicts for life, so
    a cache can hold them and test them for emptiness each call."""
    return [d for m in modules for d in (
        m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]


def hooked(modules: Sequence[nn.Module]) -> bool:
    """Whether any of ``modules`` (or torch globally) has a forward or backward hook."""
    return global_hooks() or any(hook_dicts(modules))


def plan_for(paths: Sequence[nn.Module]) -> GroupedPlan | None:
    """The plan of ``paths``, cached per path container (a block's ``ModuleList``).

    Building a plan walks every module (about 0.1 ms a block, i.e. a few ms a step); the cache
    is checked against the modules' identities, so swapping a layer re-plans. Paths with forward
    hooks get no plan.
    """
    signature = _signature(paths)
    if signature is None:
        return None
    if not isinstance(paths, nn.Module):
        return make_plan(paths)
    cached = _PLANS.get(paths)
    if cached is not None and cached[0] == signature:
        return cached[1]
    plan = make_plan(paths)
    _PLANS[paths] = (signature, plan)
    return plan


def _conv(convs: Sequence[nn.Conv2d], h: Tensor, stacked: bool) -> Tensor:
    first = convs[0]
    weight = torch.cat([c.weight for c in convs])
    bias = None if first.bias is None else torch.cat([c.bias for c in convs])  # type: ignore[misc]
    groups = first.groups * len(convs) if stacked else 1
    return F.conv2d(h, weight, bias, first.stride, first.padding, first.dilation, groups)


def _batch_norm(bns: Sequence[nn.BatchNorm2d], h: Tensor) -> Tensor:
    first = bns[0]
    training = first.training
    weight = torch.cat([b.weight for b in bns])
    bias = torch.cat([b.bias for b in bns])
    mean = torch.cat([b.running_mean for b in bns])  # type: ignore[misc]
    var = torch.cat([b.running_var for b in bns])  # type: ignore[misc]
    momentum = float(first.momentum)  # type: ignore[arg-type]
    out = F.batch_norm(h, mean, var, weight, bias, training, momentum, first.eps)
    if training:  # F.batch_norm updated the concatenated copies: hand each path its slice
        c = first.num_features
        with torch.no_grad():
            torch._foreach_copy_([b.running_mean for b in bns], list(mean.split(c)))
            torch._foreach_copy_([b.running_var for b in bns], list(var.split(c)))
            torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
    return out


def run_grouped(plan: GroupedPlan, x: Tensor, gates: Tensor, base: Tensor | None) -> Tensor:
    """base + Σ_n s_n·F_n(x) with all N paths run as one stack of fused ops."""
    h = x if plan.input_slice is None else x[:, plan.input_slice[0] : plan.input_slice[1]]
    stacked = plan.input_slice is not None
    last = len(plan.layers) - 1
    for i, column in enumerate(plan.layers):
        first = column[0]
        if isinstance(first, nn.Conv2d):
            h = _conv(column, h, stacked)  # type: ignore[arg-type]
            stacked = True
        elif isinstance(first, nn.BatchNorm2d):
            if i == last:  # a closing BN in training folds into the gated sum (bn_sum.py)
                out = bn_gated_sum(column, h, gates, base)  # type: ignore[arg-type]
                if out is not None:
                    return out
            h = _batch_norm(column, h)  # type: ignore[arg-type]
        elif isinstance(first, nn.ReLU6):
            h = F.relu6(h, inplace=True)
        else:
            h = F.relu(h, inplace=True)
    return gated_sum(h, gates, base)


def gated_sum(h: Tensor, gates: Tensor, base: Tensor | None) -> Tensor:
    """base + Σ_n s_n·h[:, n-th group of C channels] (eqn 4's sum over the stacked paths)."""
    if base is None:
        base = h.new_zeros((h.shape[0], h.shape[1] // gates.shape[1], *h.shape[2:]))
    return _GatedSum.apply(h, gates, base)


class _GatedSum(torch.autograd.Function):
    """The gated sum with a hand-written backward.

    Autograd's own choices are slow on CPU: ``baddbmm``'s backward runs the (B, N, 1)·(B, 1, K)
    outer product as one small matmul per sample, and a broadcast multiply + sum allocates an
    N·C-channel temporary twice. Here: forward = N fused multiply-adds into the output (same
    order as dense execution), grad of the paths = one broadcast multiply, grad of the gates =
    per-sample dot products as one batched matrix product.
    """

    @staticmethod
    def forward(ctx, h: Tensor, gates: Tensor, base: Tensor) -> Tensor:  # type: ignore[override]
        b, n = gates.shape
        g = gates.to(h.dtype)
        parts = h.split(h.shape[1] // n, dim=1)
        out = torch.addcmul(base, parts[0], g[:, 0].view(b, 1, 1, 1))
        for i in range(1, n):
            out.addcmul_(parts[i], g[:, i].view(b, 1, 1, 1))
        ctx.save_for_backward(h, g)
        ctx.gates_dtype = gates.dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:  # type: ignore[override]
        h, g = ctx.saved_tensors
        b, n = g.shape
        grad_h = grad_g = None
        if h.is_contiguous():  # NCHW: path n is one contiguous chunk of every sample
            k = h[0].numel() // n
            go = grad.reshape(b, 1, k)
            if ctx.needs_input_grad[0]:
                grad_h = (go * g.view(b, n, 1)).view_as(h)
            if ctx.needs_input_grad[1]:
                grad_g = torch.bmm(go, h.view(b, n, k).transpose(1, 2)).view(b, n)
        else:  # e.g. channels_last: work on the N strided channel slices
            parts = h.split(h.shape[1] // n, dim=1)
            if ctx.needs_input_grad[0]:
                grad_h = torch.empty_like(h)
                for i, part in enumerate(grad_h.split(h.shape[1] // n, dim=1)):
                    torch.mul(grad, g[:, i].view(b, 1, 1, 1), out=part)
            if ctx.needs_input_grad[1]:
                grad_g = torch.stack([(grad * p).sum(dim=(1, 2, 3)) for p in parts], dim=1)
        if grad_g is not None:
            grad_g = grad_g.to(ctx.gates_dtype)
        return grad_h, grad_g, grad


def try_run_grouped(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor, base: Tensor | None
) -> Tensor | None:
    """Grouped result, or None when the paths cannot be grouped (the caller runs dense)."""
    plan = plan_for(paths)
    if plan is None or not _same_modes(plan):
        return None
    return run_grouped(plan, x, gates, base)


def _same_modes(plan: GroupedPlan) -> bool:
    """Each fused BN needs one train/eval mode (checked before any running statistic moves)."""
    return all(
        len({m.training for m in column}) == 1
        for column in plan.layers
        if isinstance(column[0], nn.BatchNorm2d)
    )
