"""Eqn 4 and the executor: X_l = shortcut(X_{l−1}) + Σ_n s_{l,n}·F_{l,n}(X_{l−1})."""

import pytest
import torch
from torch import nn

import dmnn
from dmnn.execution.forcing import force_gates
from dmnn.network.block import GatedBlock
from dmnn.network.gate import Gate, GateDecision


class FixedGate(Gate):
    def __init__(self, gates):
        super().__init__()
        self.gates = gates

    def forward(self, x, state=None):
        return GateDecision(gates=self.gates, probs=self.gates)


def scale_path(k: float) -> nn.Sequential:
    conv = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(conv.weight, k)
    return nn.Sequential(conv)


class Counter:
    def __init__(self, module):
        self.calls, self.rows = 0, 0
        module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.calls += 1
        self.rows += inputs[0].shape[0]


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_eqn4_by_hand(mode):
    gates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    block = GatedBlock([scale_path(2.0), scale_path(3.0)], nn.Identity(), FixedGate(gates)).eval()
    block.execution = mode
    x = torch.ones(4, 1, 2, 2)
    out, _ = block(x)
    # rows: 1 + 2, 1 + 3, 1 + 2 + 3, 1 (shortcut only)
    assert out[:, 0, 0, 0].tolist() == [3.0, 4.0, 6.0, 1.0]
    assert torch.equal(x, torch.ones(4, 1, 2, 2)), "the executor must not write into its input"


def test_sparse_never_runs_off_rows_or_paths():
    gates = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    block = GatedBlock([scale_path(2.0), scale_path(3.0)], nn.Identity(), FixedGate(gates)).eval()
    counters = [Counter(p) for p in block.paths]
    block(torch.ones(3, 1, 2, 2))
    assert (counters[0].calls, counters[0].rows) == (1, 2)
    assert (counters[1].calls, counters[1].rows) == (0, 0)


def test_gated_block_without_shortcut_is_rejected():
    with pytest.raises(ValueError, match="shortcut"):
        GatedBlock([scale_path(1.0)], None, FixedGate(torch.ones(1, 1)))


@pytest.mark.parametrize("name", ["dmnn_resnet20", "dmnn_resnet50_cifar", "dmnn_mobilenetv2"])
def test_sparse_equals_masked_dense_on_real_models(name):
    model = dmnn.create_model(name).eval()
    x = torch.randn(5, 3, 32, 32)
    outs = {}
    for mode in ("dense", "sparse"):
        model.set_execution(mode)
        with torch.no_grad(), force_gates(model, 0.5, seed=3):
            outs[mode] = model(x)
    assert (outs["dense"] - outs["sparse"]).abs().max().item() <= 1e-5


def test_off_sub_block_of_a_real_model_is_never_run():
    model = dmnn.create_model("dmnn_resnet56").eval()
    pattern = [torch.tensor([1.0, 1.0]) for _ in model.blocks]
    pattern[3] = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    counters = [Counter(p) for p in model.blocks[3].paths]
    with torch.no_grad(), force_gates(model, pattern):
        model(torch.randn(4, 3, 32, 32))
    assert counters[0].rows == 3 and counters[1].rows == 1


def test_forced_rate_is_reproducible_and_close_to_the_rate():
    model = dmnn.create_model("dmnn_resnet110").eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        with force_gates(model, 0.3, seed=7):
            _, a = model(x, return_routing=True)
        with force_gates(model, 0.3, seed=7):
            _, b = model(x, return_routing=True)
    assert all(torch.equal(p, q) for p, q in zip(a.gates, b.gates, strict=True))
    assert a.execution_rates().mean().item() == pytest.approx(0.3, abs=0.05)
    assert all(blk.gate_override is None for blk in model.blocks), "context must restore"


def test_bad_gate_specs_are_rejected():
    model = dmnn.create_model("dmnn_resnet20")
    with pytest.raises(ValueError, match="rate"), force_gates(model, 1.5):
        pass
    with pytest.raises(ValueError, match="pattern"), force_gates(model, [torch.ones(2)]):
        pass


def test_an_all_off_block_under_autograd_does_not_activate_its_input_in_place():
    """Eval mode with autograd (a hard-gate fine-tune, saliency): with every path off, an
    identity-shortcut block's sum is its input; the in-place ReLU must not run on it."""
    import dmnn
    from dmnn.execution.forcing import force_gates

    model = dmnn.create_model("dmnn_resnet20", num_classes=10).eval()
    x = torch.randn(4, 3, 16, 16)
    pattern = [torch.zeros(4, 2) if i == 4 else torch.ones(4, 2)
               for i in range(len(model.blocks))]
    with force_gates(model, pattern):
        out = model(x)
    out.sum().backward()  # raised "modified by an inplace operation" before
    assert all(p.grad is not None for p in model.blocks[0].paths.parameters())
