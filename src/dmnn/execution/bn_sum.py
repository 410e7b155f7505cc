"""A training-mode BatchNorm fused with eqn 4's gated sum: the last layer of a grouped block.

Each sub-block ends in a BatchNorm over its full C_out-channel output, so the grouped stack's
last conv writes N·C_out channels z. Run literally, BatchNorm then writes the normalised N·C_out
channels y and the gated sum reads them back to form base + Σ_n s_n·y_n (C_out channels). Here
y is never written: with a_n = γ_n/σ_n (batch statistics),

    base + Σ_n s_n·y_n = base + Σ_n (s_n·a_n)·(z_n − μ_n) + Σ_n s_n·β_n,

one multiply-add per path with a per-sample, per-channel coefficient. The statistics are one
pass of two row reductions (Σz and ‖z‖ per sample and channel), which on this CPU is faster than
torch's batch-norm kernel; where E[z²] − E[z]² would cancel they are taken again on z − μ.
Backward is BatchNorm's, with the upstream gradient of path n being s_n·grad, written in closed
form (per-channel sums over the batch):

    dz_n = s_n·k_n·grad − k_n/M·(Σ s_n·grad) − k_n/M·ẑ_n·(Σ s_n·grad·ẑ_n),   k_n = γ_n/σ_n,

and ∂/∂s_n = Σ_{c,h,w} grad·y_n per sample. :func:`bn_gated_sum` returns None where the fused
form does not apply (the caller then runs BatchNorm and the gated sum apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# E[z²] − E[z]² loses about log2(1 + μ²/σ²) bits: past μ² = 16·σ² in any channel, the
# statistics are taken again on the centred copy z − μ (two passes, as stable as BatchNorm's).
CANCELLATION = 16.0


def applies(bns: Sequence[nn.BatchNorm2d], z: Tensor) -> bool:
    """Batch statistics (training BN), fp32/fp64 CPU input (NCHW or channels_last), > 1 value per
    channel.

    CPU only: it is measured there (torch's CPU batch-norm kernel is slower than two row
    reductions), and the cancellation check reads one flag back to the host each call.
    """
    first = bns[0]
    return (
        first.training
        and z.device.type == "cpu"
        and z.dtype in (torch.float32, torch.float64)
        and first.running_mean is not None
        and first.running_mean.dtype == z.dtype
        and (z.is_contiguous() or z.is_contiguous(memory_format=torch.channels_last))
        and z.numel() > z.shape[1]  # one value per channel: let F.batch_norm raise its error
    )


def bn_gated_sum(
    bns: Sequence[nn.BatchNorm2d], z: Tensor, gates: Tensor, base: Tensor | None
) -> Tensor | None:
    """base + Σ_n s_n·BN_n(z_n) for the N stacked channel groups of ``z``, or None."""
    if not applies(bns, z):
        return None
    b, n = gates.shape
    c = z.shape[1] // n
    if base is None:
        base = z.new_zeros((b, c, *z.shape[2:]))
    weight = torch.cat([bn.weight for bn in bns])
    bias = torch.cat([bn.bias for bn in bns])
    mean = torch.cat([bn.running_mean for bn in bns])  # type: ignore[misc]
    var = torch.cat([bn.running_var for bn in bns])  # type: ignore[misc]
    first = bns[0]
    out = _BNGatedSum.apply(z, gates, base, weight, bias, mean, var, float(first.momentum),
                            first.eps)
    with torch.no_grad():  # hand each path its slice of the updated statistics
        torch._foreach_copy_([bn.running_mean for bn in bns], list(mean.split(c)))
        torch._foreach_copy_([bn.running_var for bn in bns], list(var.split(c)))
        torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
    return out


class _BNGatedSum(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, z: Tensor, gates: Tensor, base: Tensor, weight: Tensor, bias: Tensor,
        running_mean: Tensor, running_var: Tensor, momentum: float, eps: float,
    ) -> Tensor:
        b, n = gates.shape
        channels = z.shape[1]
        c = channels // n
        m = z.numel() // channels  # values per channel
        mean, var = _moments(z)
        x, x_mean = z, mean  # what backward reads: z itself, or z − μ where z's moments cancel
        if bool((mean * mean > CANCELLATION * var).any()):  # a host read: CPU only (applies)
            x = z - mean.view(1, channels, 1, 1)
            var = _moments(x)[1]
            x_mean = torch.zeros_like(mean)
        with torch.no_grad():  # F.batch_norm's update: momentum, unbiased variance
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (m / (m - 1)), momentum)
        invstd = torch.rsqrt(var + eps)
        scale = (weight * invstd).view(n, c)
        g = gates.to(z.dtype)
        coef = g.view(b, n, 1) * scale.view(1, n, c)
        shift = g @ (bias.view(n, c) - scale * x_mean.view(n, c))  # (B, C)
        out = base + shift.view(b, c, 1, 1)
        for i, part in enumerate(x.split(c, dim=1)):
            out.addcmul_(part, coef[:, i].view(b, c, 1, 1))
        ctx.save_for_backward(x, x_mean, g, weight, bias, invstd)
        ctx.gates_dtype = gates.dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, x_mean, g, weight, bias, invstd = ctx.saved_tensors
        b, n = g.shape
        c = grad.shape[1]
        m = x.numel() // x.shape[1]
        parts = x.split(c, dim=1)
        inv, gamma, beta = invstd.view(n, c), weight.view(n, c), bias.view(n, c)
        mu = x_mean.view(n, c)
        grad_sum = grad.sum(dim=(2, 3))  # (B, C): Σ_hw grad
        # (B, N, C): Σ_hw grad·ẑ_n, ẑ_n = (x_n − mean)/σ_n
        dots = torch.stack([(grad * p).sum(dim=(2, 3)) for p in parts], dim=1)
        dot = (dots - mu * grad_sum.unsqueeze(1)) * inv
        grad_gates = (dot * gamma).sum(-1) + grad_sum @ beta.t()
        grad_weight = (g.unsqueeze(-1) * dot).sum(0)  # (N, C)
        grad_bias = g.t() @ grad_sum  # (N, C)
        k = gamma * inv
        coef = g.view(b, n, 1) * k.view(1, n, c)
        alpha = -k * grad_weight * inv / m  # times (x_n − mean)
        delta = -k * grad_bias / m - alpha * mu
        grad_z = torch.empty_like(x)
        for i, part in enumerate(grad_z.split(c, dim=1)):
            torch.addcmul(delta[i].view(1, c, 1, 1), parts[i], alpha[i].view(1, c, 1, 1), out=part)
            part.addcmul_(grad, coef[:, i].view(b, c, 1, 1))
        return (grad_z, grad_gates.to(ctx.gates_dtype), grad, grad_weight.reshape(-1),
                grad_bias.reshape(-1), None, None, None, None)


def _moments(z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance as E[z²] − E[z]² (one pass of row reductions)."""
    b, channels = z.shape[:2]
    m = z.numel() // channels
    if z.is_contiguous():  # (sample, channel) rows are contiguous: reduce them, then the batch
        rows = z.view(b, channels, -1)
        mean = rows.sum(2).sum(0) / m
        square = torch.linalg.vector_norm(rows, dim=2).square().sum(0) / m
    else:  # channels_last: channels are the inner dimension (vector_norm is slow across it)
        mean = z.sum((0, 2, 3)) / m
        square = (z * z).sum((0, 2, 3)) / m
    return mean, (square - mean * mean).clamp_(min=0)
