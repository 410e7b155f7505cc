"""The MACs table: hand cases, published values and the FlopCounterMode cross-check."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dmnn
from dmnn.execution.forcing import force_gates
from dmnn.network.macs import MacsTable


def test_per_sample_macs_by_hand():
    table = MacsTable(
        input_size=(1, 1), stem=10, head=5, shortcut=(1, 0), controller=(2, 2),
        paths=((100, 200), (300, 400)), gated=(True, True),
    )
    assert (table.static, table.full, table.minimum, table.dynamic_full) == (20, 1020, 20, 1000)
    gates = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])]
    assert table.per_sample(gates).tolist() == [520.0, 920.0]


def test_per_sample_macs_carry_gate_gradients():
    table = MacsTable((1, 1), 0, 0, (0,), (0,), ((100, 200),), (True,))
    g = torch.tensor([[1.0, 0.0]], requires_grad=True)
    table.per_sample([g]).sum().backward()
    assert g.grad.tolist() == [[100.0, 200.0]]


def test_published_values():
    assert dmnn.create_model("resnet50").macs_table().full == pytest.approx(4.09e9, rel=1e-3)
    assert dmnn.create_model("resnet56").macs_table().full == pytest.approx(125.49e6, rel=1e-3)
    assert dmnn.create_model("mobilenetv2").macs_table().full == pytest.approx(300.8e6, rel=1e-3)


def test_controller_share_of_dmnn50_is_tiny():
    table = dmnn.create_model("dmnn_resnet50").macs_table()
    # paper: "the total 16 controllers only generate about 0.02% FLOPs"
    assert table.controller_total / table.full < 2e-4


def counted_macs(model, x, spec, seed=0):
    with torch.no_grad(), force_gates(model, spec, seed=seed):
        counter = FlopCounterMode(display=False)
        with counter:
            _, routing = model(x, return_routing=True)
    return counter.get_total_flops() / 2, routing


@pytest.mark.parametrize("name", dmnn.list_models())
def test_table_agrees_with_flop_counter(name):
    model = dmnn.create_model(name).eval()
    size = model.default_input_size
    batch = 2 if size > 64 else 4
    if dmnn.registry.model_method(name) == "lcnet":
        batch = 1  # a batch computes the union of its rows' channels (tests/test_lcnet.py)
    x = torch.randn(batch, 3, size, size)
    specs = ["on", 0.5, "off"] if model.is_dynamic else ["on"]
    for spec in specs:
        counted, routing = counted_macs(model, x, spec, seed=1)
        ours = routing.macs.sum().item()
        assert abs(ours - counted) <= 0.005 * counted, (spec, ours, counted)
    if model.is_dynamic:
        assert routing.macs[0].item() == model.macs_table().minimum


def test_masked_dense_execution_pays_for_skipped_sub_blocks():
    """What other codebases do: gates at 0 but every sub-block still computed."""
    model = dmnn.create_model("dmnn_resnet20").eval()
    model.set_execution("dense")
    counted, routing = counted_macs(model, torch.randn(2, 3, 32, 32), "off")
    assert counted == 2 * model.macs_table().full
    assert routing.macs.sum().item() == 2 * model.macs_table().minimum


def test_table_follows_input_size():
    model = dmnn.create_model("resnet20")
    assert model.macs_table(64).full > 3.9 * model.macs_table(32).full
    with pytest.raises(ValueError, match="too small"):
        dmnn.create_model("mobilenetv2").macs_table(0)
