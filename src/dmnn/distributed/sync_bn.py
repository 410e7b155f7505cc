"""``--sync-bn``: BatchNorm statistics over the global batch.

torch's :class:`~torch.nn.SyncBatchNorm` runs only on accelerators; on CPU (gloo) this module's
:class:`GlobalBatchNorm2d` does the same with two differentiable all-reduces per layer (sums,
then centred squares: numerically as stable as a local BN). Eval mode and single-process runs are
plain BatchNorm. Converted models keep their ``state_dict`` keys, so checkpoints load either way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .group import active


class _AllSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a sum is the sum of the gradients
    (what torch.distributed.nn.functional.all_reduce did before its deprecation)."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group: object) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _AllSum.apply(grad, ctx.group), None


def all_sum(tensor: Tensor, group: object) -> Tensor:
    return _AllSum.apply(tensor, group)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole data-parallel batch."""

    def forward(self, x: Tensor) -> Tensor:
        ctx = active()
        if not self.training or ctx is None:
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() / c, dtype=torch.float32, device=x.device)
        first = all_sum(torch.cat([xf.sum(dim=(0, 2, 3)), count]), ctx.stats_group)
        n = first[c].detach()
        mean = first[:c] / n
        centred = xf - mean.view(1, c, 1, 1)
        var = all_sum((centred * centred).sum(dim=(0, 2, 3)), ctx.stats_group) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / self.num_batches_tracked.item() if self.momentum is None
                     else self.momentum)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``model`` synchronised: torch's SyncBatchNorm on CUDA, else ours."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        owned = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        return new.to(owned[0].device) if owned else new  # a BN without affine or statistics
    for name, child in module.named_children():
        setattr(module, name, _convert(child))
    return module
