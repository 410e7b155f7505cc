"""Fused inference: BatchNorm folded into the convolutions, a block's on-paths as one stack.

Why: the sparse executor skips off sub-blocks, but each on sub-block still runs as its own narrow
convolutions with its own BatchNorms, so a DMNN block dispatches N times the kernels of the
static block at a fraction of the width. Here, for the set S of a row's on-paths (its gate
pattern), the paths' layers are fused from the per-path parameters (as the grouped training
executor does) and BatchNorm is folded in:

* a conv followed by a BN becomes one conv with a bias (w·γ/σ, β − μ·γ/σ; eval statistics);
* the first conv of the on-paths reads the shared block input: weights concatenated along the
  output channels (C_in → |S|·C); later convs run on the stacked features with ``groups``
  multiplied by |S|;
* the last conv maps each path's C channels to C_out and eqn 4 sums the paths: its weights are
  concatenated along the *input* channels, so one conv computes Σ_{n∈S} F_n(x) (biases summed);
* rows are grouped by gate pattern (at most 2^N − 1 stacks per block; all-off rows keep the
  shortcut), gathered, run, and added into the shortcut output (:func:`~.sparse.run_rows`).

Folded weights are cached per block and pattern (bounded, least recently used first out) and
rebuilt when any parameter or BN statistic changes (their identities, version counters and
storage are the cache key, so an assigned parameter, buffer or layer counts too) and dropped
when the model goes back to training. Parameters and
``state_dict`` are never touched: checkpoints are the unfolded ones. Stem and projection
shortcuts that are conv → BN stacks are folded the same way (:func:`run_folded`), so a static
backbone at eval gets the same treatment: the like-for-like baseline. An off path's weights are
never read.

Paths of another structure (what :func:`~.grouped.make_plan` does not recognise, or a last
layer that is not a conv) get no stack and run through the sparse executor.
"""

from __future__ import annotations

import operator
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.inplace import global_hooks, shares_memory
from ..network.layers import ChannelSlice
from ..network.modes import check_split
from .grouped import (
    ACTS,
    GroupedPlan,
    hook_dicts,
    path_modules,
    plan_for,
    same_bn,
    same_conv,
)
from .sparse import add_into, gather, run_rows

MAX_PATTERNS = 16
"""Fused stacks kept per block (N = 4 has 15 non-empty patterns)."""


@dataclass(frozen=True)
class Conv:
    """A folded convolution (F.conv2d arguments)."""

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def __call__(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of ``conv`` followed by ``bn`` in eval mode, as one conv."""
    w = conv.weight.detach()
    b = None if conv.bias is None else conv.bias.detach()
    if bn is None:
        return w, b
    scale = bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    shift = bn.bias.detach() - bn.running_mean * scale  # type: ignore[operator]
    if b is not None:
        shift = shift + b * scale
    return w * scale.view(-1, 1, 1, 1), shift


def _layout(weight: Tensor) -> torch.memory_format:
    """The layout the model keeps its conv weights in (``model.to(memory_format=...)``):
    folded weights keep it, so a channels-last model runs channels-last convs."""
    if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _act(module: nn.Module):
    return (lambda h: F.relu6(h, inplace=True)) if type(module) is nn.ReLU6 else (
        lambda h: F.relu(h, inplace=True))


@dataclass(frozen=True)
class Stack:
    """The fused, folded on-paths of one gate pattern: Σ_{n∈S} F_n(x) in one pass."""

    channels: Tensor | slice | None  # the block-input channels the stack reads (None: all)
    ops: tuple

    def __call__(self, x: Tensor) -> Tensor:
        if isinstance(self.channels, slice):
            x = x[:, self.channels]
        elif self.channels is not None:
            x = x.index_select(1, self.channels)
        for op in self.ops:
            x = op(x)
        return x


def build_stack(plan: GroupedPlan, on: Sequence[int]) -> Stack | None:
    """The stack of paths ``on`` (indices in path order), or None if the last layer is not a
    conv (the paths' sum cannot then fall out of one conv)."""
    columns = list(plan.layers)
    k = len(on)
    channels: Tensor | slice | None = None
    stacked = plan.input_slice is not None
    if stacked:
        start, stop = plan.input_slice  # type: ignore[misc]
        width = (stop - start) // plan.num_sub_blocks
        if list(on) == list(range(on[0], on[0] + k)):
            channels = slice(start + on[0] * width, start + (on[-1] + 1) * width)
        else:
            channels = torch.cat([torch.arange(start + n * width, start + (n + 1) * width)
                                  for n in on])
    convs = [i for i, col in enumerate(columns) if type(col[0]) is nn.Conv2d]
    last = convs[-1] if convs else -1
    after = columns[last + 1:]
    if last < 0 or any(type(col[0]) is not nn.BatchNorm2d for col in after) or len(after) > 1:
        return None
    ops: list = []
    i = 0
    while i < len(columns):
        column = columns[i]
        first = column[0]
        if type(first) is nn.Conv2d:
            bns = columns[i + 1] if i + 1 < len(columns) and type(
                columns[i + 1][0]) is nn.BatchNorm2d else None
            folded = [fold(column[n], None if bns is None else bns[n]) for n in on]
            ws = [w for w, _ in folded]
            bs = [b for _, b in folded]
            bias = None if bs[0] is None else bs
            if i == last and stacked:  # Σ_n W_n·h_n: weights side by side along the input
                weight = torch.cat(ws, dim=1)
                groups = first.groups
                if groups != 1:
                    return None
                b = None if bias is None else torch.stack(bias).sum(0)
            elif i == last:  # one conv on the shared input: Σ_n W_n·x = (Σ_n W_n)·x
                weight, groups = torch.stack(ws).sum(0), first.groups
                b = None if bias is None else torch.stack(bias).sum(0)
            else:
                weight = torch.cat(ws)
                groups = first.groups * k if stacked else first.groups
                b = None if bias is None else torch.cat(bias)
            ops.append(Conv(weight.contiguous(memory_format=_layout(first.weight)), b,
                            first.stride, first.padding, first.dilation, groups))
            stacked = True
            i += 2 if bns is not None else 1
            continue
        if type(first) is nn.BatchNorm2d:  # a BN with no conv before it (never in our paths)
            return None
        ops.append(_act(first))
        i += 1
    return Stack(channels, tuple(ops))


_version = operator.attrgetter("_version")


def _tensors(modules: Sequence[nn.Module]) -> list[Tensor]:
    """Every tensor the modules own (not their children's)."""
    return [t for m in modules for d in (m._parameters, m._buffers) for t in d.values()
            if t is not None]


class _Watch:
    """Whether the tensors of ``modules`` are unchanged since the watch began: an in-place update
    (optimizer, load_state_dict, a manual edit) bumps a version counter, a move changes the
    storage, a replaced tensor its identity (a few µs a block, no global registration hook)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        # a module keeps its dicts for life: hold them, not the modules' attributes
        self.dicts = [d for m in self.modules for d in (m._parameters, m._buffers)]
        self.entries = self._entries()  # None entries (a conv without bias) included
        self.tensors = _tensors(self.modules)
        self.state = self._state()

    def _entries(self) -> list[Tensor | None]:
        return [*chain.from_iterable(map(dict.values, self.dicts))]

    def _state(self) -> tuple[int, ...]:
        return (*map(_version, self.tensors), *map(Tensor.data_ptr, self.tensors))

    def unchanged(self) -> bool:
        now = self._entries()
        return (len(now) == len(self.entries) and all(map(operator.is_, now, self.entries))
                and self._state() == self.state)


class FusedCache:
    """A block's plan and its fused stacks by pattern, valid while no layer has a hook and the
    layers' tensors are unchanged (:meth:`valid`)."""

    def __init__(self, paths: nn.Module, plan: GroupedPlan) -> None:
        self.plan = plan
        self.layers = path_modules(paths)  # type: ignore[arg-type]
        self.hooks = hook_dicts(self.layers)
        self.watch = _Watch(list(dict.fromkeys(m for column in plan.layers for m in column)))
        self.stacks: OrderedDict[tuple[int, ...], Stack | None] = OrderedDict()

    def valid(self, paths: Sequence[nn.Module]) -> bool:
        if path_modules(paths) != self.layers:
            return False  # a layer was replaced
        return not (global_hooks() or any(self.hooks)) and self.watch.unchanged()

    def get(self, on: tuple[int, ...]) -> Stack | None:
        stack = self.stacks.get(on)
        if stack is None and on not in self.stacks:
            stack = build_stack(self.plan, on)
            self.stacks[on] = stack
            if len(self.stacks) > MAX_PATTERNS:
                self.stacks.popitem(last=False)
        else:
            self.stacks.move_to_end(on)
        return stack


_CACHES: weakref.WeakKeyDictionary[nn.Module, FusedCache] = weakref.WeakKeyDictionary()


def _cache_for(paths: Sequence[nn.Module]) -> FusedCache | None:
    """The block's valid cache, rebuilt (plan and all) when it no longer holds; None when the
    paths are training or cannot be fused."""
    if not isinstance(paths, nn.Module) or any(m.training for m in paths):
        return None
    cache = _CACHES.get(paths)
    if cache is not None and cache.valid(paths):
        return cache
    plan = fused_plan(paths)
    if plan is None:
        _CACHES.pop(paths, None)
        return None
    cache = FusedCache(paths, plan)
    _CACHES[paths] = cache
    return cache


def drop_fused(module: nn.Module) -> None:
    """Forget the folded weights of ``module`` and everything in it (e.g. on ``train()``)."""
    for m in module.modules():
        _CACHES.pop(m, None)


def fused_plan(paths: Sequence[nn.Module]) -> GroupedPlan | None:
    """The grouped plan of ``paths`` (eval mode, checked by the caller) when it is foldable (one
    path included)."""
    if len(paths) == 1:
        return _single_plan(paths)
    return plan_for(paths)


def _single_plan(paths: nn.Module) -> GroupedPlan | None:
    """A one-path plan (a static block, a whole-block gate): the path's own layers, with the
    checks :func:`~.grouped.make_plan` applies to N paths."""
    path = paths[0]
    if type(path) is not nn.Sequential or _has_hooks(path):
        return None
    layers = list(path)
    input_slice = None
    if layers and type(layers[0]) is ChannelSlice:
        input_slice = (layers[0].start, layers[0].stop)
        layers = layers[1:]
    for m in layers:
        if type(m) is nn.Conv2d:
            if not same_conv([m]):
                return None
        elif type(m) is nn.BatchNorm2d:
            if not same_bn([m]):
                return None
        elif type(m) not in ACTS:
            return None
    if not layers:
        return None
    return GroupedPlan(1, input_slice, tuple((m,) for m in layers))


def _has_hooks(path: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in (path, *path._modules.values()))


def run_fused(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor | None, base: Tensor | None,
    *, owned: bool = False, split: str = "pattern",
) -> Tensor | None:
    """base + Σ_n s_n·F_n(x) with folded, fused stacks per gate pattern; None if the paths
    cannot be fused (the caller runs them sparse). ``split``: how a mixed batch is split
    (:data:`~dmnn.network.modes.MIXED_SPLITS`).

    ``owned``: the caller gives ``base`` away (even when it is ``x`` itself), so the sum is
    written into it instead of a clone. Safe with the pattern split: patterns partition the
    rows, and each pattern's rows are gathered before its sum is written back. The path split
    (overlapping rows) writes in place only into a base that does not share ``x``'s memory.

    With autograd on (an eval-mode model differentiated, e.g. for saliency) it returns None:
    folded weights are detached, so the parameters would get no gradient; sparse runs instead."""
    if torch.is_grad_enabled():
        return None
    cache = _cache_for(paths)
    if cache is None:
        return None
    n = cache.plan.num_sub_blocks
    batch = x.shape[0]
    if gates is None or batch == 1:  # one pattern (a static block: all): one fused call
        on = tuple(range(n)) if gates is None else tuple(
            i for i, g in enumerate(gates[0].tolist()) if g > 0.5)  # one host read
        if not on:
            return base
        stack = cache.get(on)
        if stack is None:
            return None
        y = stack(x)
        return y if base is None else add_into(base, y, owned)
    bits = (gates > 0.5).to(torch.int64)
    codes = (bits * (1 << torch.arange(n, device=x.device))).sum(dim=1)
    counts = torch.bincount(codes, minlength=1 << n).tolist()  # the block's one host sync
    # (rows, count, pattern) per call: each pattern's rows, or each on path's rows
    per_path = None if split == "pattern" else _path_counts(counts, n)
    if per_path is not None and _by_path(counts, per_path, split):
        calls = [(bits[:, i].bool(), count, (i,)) for i, count in enumerate(per_path) if count]
        owned = owned and not shares_memory(base, x)
    else:
        calls = [(codes == code, count, tuple(i for i in range(n) if code >> i & 1))
                 for code, count in enumerate(counts) if count and code]
    stacks = [cache.get(on) for _, _, on in calls]  # all first: None leaves ``base`` untouched
    if any(stack is None for stack in stacks):
        return None
    out = base
    for (on, count, _), stack in zip(calls, stacks, strict=True):
        out = run_rows(on, count, batch, lambda rows, s=stack: s(gather(x, rows)), out,
                       owned=owned)
        owned = True
    if out is None:
        raise RuntimeError("every sub-block is off and the block has no shortcut: no output")
    return out


def _path_counts(counts: list[int], n: int) -> list[int]:
    """Rows on per sub-block, from the rows per pattern code (bit i: sub-block i on)."""
    return [sum(counts[c] for c in range(1 << n) if c >> i & 1) for i in range(n)]


def _by_path(counts: list[int], per_path: list[int], split: str) -> bool:
    """Whether the ``split`` rule runs this batch by path (``auto``: fewer calls that way)."""
    check_split(split)
    if split != "auto":
        return split == "path"
    return sum(map(bool, per_path)) < sum(map(bool, counts[1:]))


_FOLDED: weakref.WeakKeyDictionary[nn.Module, tuple[_Watch, list]] = weakref.WeakKeyDictionary()


def folded_ops(module: nn.Sequential) -> list:
    """The layers of ``module`` with every conv → BN pair as one folded :class:`Conv` (cached
    while the module's tensors are unchanged); other layers are the modules themselves."""
    cached = _FOLDED.get(module)
    if cached is None or cached[0].modules != list(module) or not cached[0].unchanged():
        cached = (_Watch(list(module)), _fold_sequence(list(module)))
        _FOLDED[module] = cached
    return cached[1]


def run_folded(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with every conv → BN pair of a ``Sequential`` folded (eval mode only; any
    other module runs as itself). For stems and projection shortcuts. With autograd on the
    layers run unfolded (folded weights are detached: no parameter gradient through them)."""
    if type(module) is not nn.Sequential or module.training or torch.is_grad_enabled():
        return module(x)
    for op in folded_ops(module):
        x = op(x)
    return x


def _fold_sequence(layers: list[nn.Module]) -> list:
    ops: list = []
    i = 0
    while i < len(layers):
        m = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if type(m) is nn.Conv2d and m.padding_mode == "zeros" and type(nxt) is nn.BatchNorm2d:
            w, b = fold(m, nxt)
            ops.append(Conv(w.contiguous(memory_format=_layout(m.weight)), b, m.stride,
                            m.padding, m.dilation, m.groups))
            i += 2
            continue
        ops.append(m)
        i += 1
    return ops
