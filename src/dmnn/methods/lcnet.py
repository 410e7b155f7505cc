"""LC-Net (layer and channel salience nets; lcnet-paper.txt) on the ResNet backbones.

A shared global average pool feeds two FC layers per block: L-Net (C → 1) gives the block
salience S_L (eqn 3) that scales the residual, C-Net (C → C1) gives a salience per output channel
of the block's first conv (eqn 4) that scales that layer's output. Both use ReLU-1 (eqn 5, clamp to
[0, 1]); training uses a leaky ReLU-1. Saliences stay continuous at inference (they scale what
runs); a zero block salience skips the block and a zero channel salience skips that channel's
computation in the first conv and the matching input channel of the next conv. The loss adds L1
penalties on both saliences to the classification loss.

Execution at eval: the rows with S_L > 0 are gathered; the first conv, its BatchNorm and the next
conv's input are sliced to the channels that are active for at least one of those rows (per
sample at batch 1, where this is exact weight slicing); inactive channels of a row still get its
zero salience, so results equal the masked computation. Per-sample MACs count each sample's own
active channels; in a batch the executor computes the union, which the benchmark measures.

Where we differ: the paper trains its control nets with their own tiny learning rate and fixed
L1 weights; we use the shared schedule and adapt the L1 weights during training (× exp(κ·(f/f_total
− r)) after every step, like DRNet's μ) so the MACs ratio settles at ``--target-rate`` for a
matched-compute comparison. The channel salience is applied after the first conv's BN and ReLU.
Only ResNet backbones: their first conv is a plain (ungrouped) conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int, check_number, check_rate, option
from ..errors import UsageError
from ..execution.fused import Conv, folded_ops
from ..execution.sparse import gather, run_rows
from ..network.gate import Gate, GateDecision
from ..network.macs import walk
from ..network.routing import Routing
from .base import Loss, LossOutput, Method, MethodOptions, RunSettings

if TYPE_CHECKING:
    from ..network.block import GatedBlock


def relu1(x: Tensor) -> Tensor:
    """Eqn 5: 0 below 0, x on [0, 1], 1 above."""
    return x.clamp(0.0, 1.0)


def leaky_relu1(x: Tensor, slope: float) -> Tensor:
    """ReLU-1 with slope ``slope`` outside [0, 1] (training)."""
    inside = x.clamp(0.0, 1.0)
    return inside + slope * (x - inside)


def _check_lc_path(path: nn.Module) -> None:
    ok = (isinstance(path, nn.Sequential) and len(path) >= 4 and isinstance(path[0], nn.Conv2d)
          and isinstance(path[1], nn.BatchNorm2d) and isinstance(path[3], nn.Conv2d)
          and path[0].groups == 1 and path[3].groups == 1)
    if not ok:
        raise UsageError("LC-Net needs a path starting conv → BN → act → conv (ungrouped)")


def path_forward(path: nn.Sequential, x: Tensor, channel: Tensor) -> Tensor:
    """Dense: F(x) with the first layer's output scaled per channel."""
    h = path[2](path[1](path[0](x))) * channel[:, :, None, None]
    return path[3:](h)


def path_sliced(path: nn.Sequential, x: Tensor, channel: Tensor, active: Tensor) -> Tensor:
    """F(x) computing only the ``active`` channels of the first conv and the next conv's input."""
    conv1, bn1, act, conv2 = path[0], path[1], path[2], path[3]
    if active.numel() == 0:  # nothing reaches conv2: its output is zero, the rest still runs
        h_in = (x.shape[2] + 2 * conv1.padding[0] - conv1.kernel_size[0]) // conv1.stride[0] + 1
        w_in = (x.shape[3] + 2 * conv1.padding[1] - conv1.kernel_size[1]) // conv1.stride[1] + 1
        ho = (h_in + 2 * conv2.padding[0] - conv2.kernel_size[0]) // conv2.stride[0] + 1
        wo = (w_in + 2 * conv2.padding[1] - conv2.kernel_size[1]) // conv2.stride[1] + 1
        h = x.new_zeros(x.shape[0], conv2.out_channels, ho, wo)
        if conv2.bias is not None:
            h = h + conv2.bias.view(1, -1, 1, 1)
        return path[4:](h)
    bias1 = conv1.bias.index_select(0, active) if conv1.bias is not None else None
    h = F.conv2d(x, conv1.weight.index_select(0, active), bias1, conv1.stride, conv1.padding,
                 conv1.dilation)
    h = F.batch_norm(h, bn1.running_mean.index_select(0, active),
                     bn1.running_var.index_select(0, active), bn1.weight.index_select(0, active),
                     bn1.bias.index_select(0, active), False, 0.0, bn1.eps)
    h = act(h) * channel.index_select(1, active)[:, :, None, None]
    h = F.conv2d(h, conv2.weight.index_select(1, active), conv2.bias, conv2.stride, conv2.padding,
                 conv2.dilation)
    return path[4:](h)


def path_sliced_folded(path: nn.Sequential, x: Tensor, channel: Tensor, active: Tensor
                       ) -> Tensor | None:
    """:func:`path_sliced` on the BN-folded path (channel slices of the folded weights), or None
    when the folded path is not conv → act → conv (run the unfolded one)."""
    ops = folded_ops(path)
    if len(ops) < 3 or not isinstance(ops[0], Conv) or not isinstance(ops[2], Conv):
        return None
    c1, act, c2 = ops[0], ops[1], ops[2]
    if c1.groups != 1 or c2.groups != 1:
        return None
    if active.numel() == 0:  # nothing reaches conv2: its output is its bias
        h = F.conv2d(x[:, :1], c1.weight[:1, :1], None, c1.stride, c1.padding, c1.dilation)
        h = F.conv2d(h, c2.weight[:, :1], None, c2.stride, c2.padding, c2.dilation).zero_()
    else:
        bias1 = None if c1.bias is None else c1.bias.index_select(0, active)
        h = F.conv2d(x, c1.weight.index_select(0, active), bias1, c1.stride, c1.padding,
                     c1.dilation)
        h = act(h) * channel.index_select(1, active)[:, :, None, None]
        h = F.conv2d(h, c2.weight.index_select(1, active), None, c2.stride, c2.padding,
                     c2.dilation)
    if c2.bias is not None:
        h = h + c2.bias.view(1, -1, 1, 1)
    for op in ops[3:]:
        h = op(h)
    return h


class LCGate(Gate):
    """Shared GAP → L-Net FC(C → 1) and C-Net FC(C → C1), ReLU-1 (leaky in training)."""

    calibratable = True
    optional_state = ("threshold",)  # see dmnn.train.checkpoint.load_weights

    def __init__(self, in_channels: int, channels: int, leak: float = 0.01,
                 init: float = 1.0) -> None:
        super().__init__()
        self.channels, self.leak = channels, leak
        self.l_fc = nn.Linear(in_channels, 1)
        self.c_fc = nn.Linear(in_channels, channels)
        with torch.no_grad():  # start with every block and channel fully on
            self.l_fc.bias.fill_(init)
            self.c_fc.bias.fill_(init)
        # eval prunes saliences <= max(0, threshold); set by gate calibration, saved with weights
        self.register_buffer("threshold", torch.zeros(()))

    def saliences(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = x.mean(dim=(2, 3))
        if self.training:
            return leaky_relu1(self.l_fc(z), self.leak), leaky_relu1(self.c_fc(z), self.leak)
        block, channel = relu1(self.l_fc(z)), relu1(self.c_fc(z))
        if self.threshold > 0:
            block = block * (block > self.threshold)
            channel = channel * (channel > self.threshold)
        return block, channel

    def forward(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        block, channel = self.saliences(x)
        executed = (block > 0).to(block.dtype)
        inactive = (channel <= 0).sum(dim=1).to(block.dtype)
        return GateDecision(gates=block, probs=block.detach(), executed=executed,
                            inactive=inactive, extras={"block": block, "channel": channel})

    @torch.no_grad()
    def shift_on_logit(self, delta: float) -> None:
        """Gate calibration's knob (:mod:`dmnn.train.calibration`): δ < 0 prunes, at eval, the
        saliences at or below the threshold max(0, −Σδ). LC-Net has no on-logit, and shifting
        the salience pre-activations instead wrecked the trained CIFAR-10 net (mean channel
        salience 0.045: δ = −0.045 zeroed most channels, 87 % → 10 % top-1); a threshold only
        removes the smallest saliences and leaves the others as trained. δ > 0 adds nothing:
        compute that the saliences switched off carries a zero weight."""
        self.threshold -= delta

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before calibration existed have no threshold: it was 0
        state_dict.setdefault(prefix + "threshold", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        """L-Net and C-Net FCs (the shared pool is not a MAC)."""
        return in_shape[0] * (1 + self.channels)

    def channel_macs(self, path: nn.Module, in_shape: tuple[int, ...]) -> int:
        """MACs one inactive channel saves: its first-conv output and the next conv's input."""
        _check_lc_path(path)
        first, shape = walk(path[0], in_shape)
        second, _ = walk(path[3], shape)
        return (first + second) // self.channels

    def execute(self, block: GatedBlock, x: Tensor, base: Tensor | None,
                decision: GateDecision) -> Tensor:
        """X_l = act(shortcut(x) + S_L·F(x; S_C)), sparse at eval (see the module docstring)."""
        assert base is not None, "a gated block always has a shortcut"
        path = block.paths[0]
        s_block = decision.gates[:, 0]
        channel = decision.extras["channel"]
        if not block.runs_sparse():
            y = path_forward(path, x, channel) * s_block.view(-1, 1, 1, 1)
            return block.post_act(base + y)

        def run(rows: Tensor | None) -> Tensor:
            cs = gather(channel, rows)
            active = (cs > 0).any(dim=0).nonzero().squeeze(1)
            xs = gather(x, rows)
            # folded weights are detached: with autograd on, the unfolded path (its gradients)
            folded = block.folds() and not torch.is_grad_enabled()
            y = path_sliced_folded(path, xs, cs, active) if folded else None
            if y is None:
                y = path_sliced(path, xs, cs, active)
            return y * gather(s_block, rows).view(-1, 1, 1, 1)

        on = s_block > 0
        return block.activate(run_rows(on, int(on.sum()), x.shape[0], run, base), x)


@dataclass(frozen=True)
class LCOptions(MethodOptions):
    """Keyword arguments of every ``lcnet_*`` model."""

    leak: float = option(0.01, min=0.0, max=1.0, hi_open=True, help=(
        "LC-Net: slope of the leaky ReLU-1 on the saliences below 0."))

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int) -> Gate:
        return LCGate(in_channels, width, self.leak)


LAMBDA_TRAVEL = 6.0
"""η × (training steps): how far λ may move per unit of MACs-ratio gap over a whole run.

Measured on the digits preset (r = 0.5, 15 epochs, `dmnn train --model lcnet_resnet20`): 1.56
(η = 2e-4 over cpu-fast's 7800 steps, our first setting) ended at ratio 0.68, because the ratio
stops following λ once the cosine schedule has lowered the learning rate; 6 ended at 0.465
(98.6 %) and 15 at 0.455. On CIFAR-10, 1.56 had only reached 0.70 after 11 of 20 epochs."""


def dual_step_for(total_steps: int) -> float:
    """The dual-ascent step η for a run of ``total_steps``, so λ can travel as far in a short run
    as in a long one (a fixed η = 2e-4 left the digits preset, 330 steps, at ratio 0.78 for
    r = 0.5)."""
    check_int("total_steps", total_steps, 1)
    return LAMBDA_TRAVEL / total_steps


class LCLoss(Loss):
    """CE + λ_L·L1(S_L) + λ_C·L1(S_C), both λ moved by dual ascent toward the target MACs ratio.

    Why dual ascent, not the earlier multiplicative rule λ ×= exp(κ·(f/f_total − r)): on
    CIFAR-10 that rule raised λ about 7× within the first epoch, the saliences collapsed to a
    ratio of 0.29 against r = 0.5, and λ → 0 could not bring them back, because an L1 penalty can
    only remove compute. Here λ += η·(f/f_total − r) after every step, and λ may go negative. A
    negative λ rewards salience: the term becomes λ·mean(S), signed, so that saliences below zero
    (the leaky part of ReLU-1) are pulled up too. For S in [0, 1], mean(S) is the L1 norm.
    """

    def __init__(self, target: float, lam_block: float = 0.01, lam_channel: float = 0.01,
                 step: float = 2e-4) -> None:
        check_rate(target)
        check_number("step", step, 0.0)
        self.target, self.lam_block, self.lam_channel, self.step = (
            target, lam_block, lam_channel, step)

    def state_dict(self) -> dict:
        """λ and η: a resumed run continues with the step it started with."""
        return {"lam_block": self.lam_block, "lam_channel": self.lam_channel, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.lam_block, self.lam_channel = float(state["lam_block"]), float(state["lam_channel"])
        self.step = float(state.get("step", self.step))

    @staticmethod
    def penalty(saliences: list[Tensor], lam: float) -> Tensor:
        """mean|S| per block (the paper's L1) while λ ≥ 0; mean S, signed, while λ < 0."""
        per_block = [(s.abs() if lam >= 0 else s).mean() for s in saliences]
        return torch.stack(per_block).mean()

    def terms(
        self, logits: Tensor, routing: Routing, labels: Tensor, categories: Tensor | None = None
    ) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        blocks = [e["block"] for e in routing.extras if "block" in e]
        channels = [e["channel"] for e in routing.extras if "channel" in e]
        l1_block = self.penalty(blocks, self.lam_block)
        l1_channel = self.penalty(channels, self.lam_channel)
        total = cls + self.lam_block * l1_block + self.lam_channel * l1_channel
        if logits.requires_grad:  # a training step (not an evaluation pass)
            gap = self.fraction(routing).item() - self.target
            self.lam_block += self.step * gap
            self.lam_channel += self.step * gap
        parts = {"cls": cls.detach(), "l1_block": l1_block.detach(),
                 "l1_channel": l1_channel.detach(), "total": total.detach(),
                 "lambda": torch.tensor(self.lam_channel)}
        return LossOutput(total=total, parts=parts)


class LCNet(Method):
    """``lcnet_*``: block and channel saliences on the ResNet backbones."""

    name = "lcnet"
    options = LCOptions
    doc = "LC-Net variant (block and channel saliences)"

    def applies_to(self, backbone: str) -> bool:
        """Only ResNets: their first conv of a block is a plain (ungrouped) conv."""
        return backbone.startswith("resnet")

    def build_loss(self, cfg: RunSettings, total_steps: int) -> Loss:
        return LCLoss(cfg.loss.target_rate, step=dual_step_for(total_steps))

    def calibration_metric(self, cfg: RunSettings) -> str:
        """λ adapts to the network MACs fraction, so calibration holds that at r."""
        return "macs_ratio"


METHOD = LCNet()
