"""The DMNN controller (§3.2, eqns 5–8): GAP → FC, plus the previous controller's state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gates import GateDecision, on_gates


class DMNNController(nn.Module):
    """Decides per sample which of the block's N sub-blocks run.

    z = GAP(X_{l−1}) (eqn 5); V = ReLU(W1·z) (eqn 6); h′ = ReLU(W2·h_{l−1}), h_l = V + h′ (eqn 7;
    the first controller, or ``prev_state=False``, uses h_l = V); g = W3·h_l + b3 as N×2 [off, on]
    logits; gates by eqn 8. The on-logit bias starts at ``gate_bias`` so that sub-blocks start
    mostly on: a network that begins all-off gets no gradient through its sub-blocks.
    """

    def __init__(
        self,
        in_channels: int,
        num_paths: int,
        hidden_dim: int = 32,
        *,
        prev_state: bool = True,
        first: bool = False,
        num_categories: int = 0,
        tau: float = 1.0,
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        if num_categories < 0:
            raise ValueError(f"num_categories must be >= 0 (0: no heads), got {num_categories}")
        if tau <= 0:
            raise ValueError(f"tau (Gumbel temperature) must be > 0, got {tau}")
        self.num_paths, self.hidden_dim, self.tau = num_paths, hidden_dim, tau
        self.noise_scale = 1.0  # Gumbel noise multiplier in training (engine anneals it)
        self.fast_inference = True  # :meth:`infer` without autograd; False times the plain path
        self._plain: tuple[tuple[int, ...], tuple[Tensor | None, ...]] | None = None
        self.fc_in = nn.Linear(in_channels, hidden_dim)  # W1
        self.fc_prev = nn.Linear(hidden_dim, hidden_dim) if prev_state and not first else None  # W2
        self.fc_gate = nn.Linear(hidden_dim, 2 * num_paths)  # W3, b3
        self.category_head = nn.Linear(hidden_dim, num_categories) if num_categories else None
        with torch.no_grad():
            bias = self.fc_gate.bias.view(num_paths, 2)
            bias[:, 0] = 0.0
            bias[:, 1] = gate_bias

    def hidden(self, x: Tensor, state: Tensor | None) -> Tensor:
        """h_l of eqns 5–7 (F.linear on the module weights: these layers are tiny, so per-call
        overhead is what costs at batch 1)."""
        z = x.mean(dim=(2, 3))
        h = F.relu(F.linear(z, self.fc_in.weight, self.fc_in.bias))
        if self.fc_prev is not None and state is not None:
            h = h + F.relu(F.linear(state, self.fc_prev.weight, self.fc_prev.bias))
        return h

    def forward(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        if self.fast_inference and not self.training and not torch.is_grad_enabled():
            return self.infer(x, state)
        h = self.hidden(x, state)
        logits = F.linear(h, self.fc_gate.weight, self.fc_gate.bias).view(-1, self.num_paths, 2)
        gates = on_gates(logits, self.training, self.tau, self.noise_scale)
        category = None
        if self.training and self.category_head is not None:
            category = self.category_head(h)
        # probs are derived from the logits when routing is requested (GateDecision.on_probs)
        return GateDecision(gates=gates, state=h, category_logits=category,
                            extras={"logits": logits})

    def plain_weights(self) -> tuple[Tensor | None, ...]:
        """W1, b1, W2, b2, W3, b3 as plain tensors sharing the parameters' storage.

        Why: at batch 1 every op counts, and an op on a ``Parameter`` costs 2–3 µs more than on a
        plain tensor even under ``inference_mode``. In-place updates (optimizer, calibration,
        ``load_state_dict``) show through the shared storage; a moved or replaced parameter
        changes its data pointer, which rebuilds the views."""
        params = [self.fc_in.weight, self.fc_in.bias, self.fc_gate.weight, self.fc_gate.bias]
        if self.fc_prev is not None:
            params += [self.fc_prev.weight, self.fc_prev.bias]
        key = tuple(p.data_ptr() for p in params)
        if self._plain is None or self._plain[0] != key:
            w1, b1, w3, b3, *prev = (p.detach() for p in params)
            w2, b2 = prev if prev else (None, None)
            self._plain = (key, (w1, b1, w2, b2, w3, b3))
        return self._plain[1]

    def infer(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        """Eval without autograd: eqns 5–8 with the noise-free argmax, on :meth:`plain_weights`
        and in-place ReLUs. Same decisions as :meth:`forward` (tested)."""
        w1, b1, w2, b2, w3, b3 = self.plain_weights()
        h = F.linear(x.mean(dim=(2, 3)), w1, b1).relu_()
        if w2 is not None and state is not None:
            h = h + F.linear(state, w2, b2).relu_()
        logits = F.linear(h, w3, b3).view(-1, self.num_paths, 2)
        return GateDecision(gates=logits.argmax(dim=-1).to(logits.dtype), state=h,
                            extras={"logits": logits})

    @torch.no_grad()
    def shift_on_logit(self, delta: float) -> None:
        """Add ``delta`` to every path's on-logit bias: the decision threshold moves from
        p_on > 0.5 to p_on > sigmoid(-delta) (see :mod:`dmnn.gate_calibration`)."""
        self.fc_gate.bias.view(self.num_paths, 2)[:, 1] += delta

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        """MACs of W1, W2 and W3 at inference (GAP is not counted; category heads do not run)."""
        macs = in_shape[0] * self.hidden_dim + self.hidden_dim * 2 * self.num_paths
        if self.fc_prev is not None:
            macs += self.hidden_dim * self.hidden_dim
        return macs
