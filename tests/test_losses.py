"""Eqns 9–16 pinned by hand-computed cases."""

import math

import pytest
import torch

from dmnn.methods.dmnn import (
    DMNNLoss,
    DMNNOptions,
    category_loss,
    exec_loss,
    path_balance_loss,
    stage_weights,
)
from dmnn.methods.objective import LossConfig, flops_loss
from dmnn.network.macs import MacsTable
from dmnn.network.routing import Routing, execution_rates

TABLE = MacsTable(
    input_size=(1, 1), stem=10, head=5, shortcut=(1, 0), controller=(2, 2),
    paths=((100, 200), (300, 400)), gated=(True, True),
)


def routing(gates, category_logits=(None, None), stages=(0, 1)):
    return Routing(
        gates=list(gates), probs=list(gates), category_logits=list(category_logits),
        macs=TABLE.per_sample(gates), table=TABLE, stages=list(stages),
    )


def test_stage_weights_start_at_1e4_and_grow_tenfold():
    assert stage_weights([0, 0, 1, 1, 2, 3]) == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3, 1e-2, 1e-1])
    assert stage_weights([0, 1], base=0.5, factor=2) == [0.5, 1.0]


def test_eqn9_10_category_loss_by_hand():
    logits = [torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])]
    target = torch.tensor([0])
    # CE: ln 2 for the uniform controller, −ln(3/4) for the second; weights 1e-4 and 1e-3
    expected = 1e-4 * math.log(2) + 1e-3 * math.log(4 / 3)
    assert category_loss(logits, [1e-4, 1e-3], target).item() == pytest.approx(expected)


def test_eqn11_12_execution_rate_loss_by_hand():
    gates = [torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])]
    assert execution_rates(gates).tolist() == [0.75, 0.25]
    assert exec_loss(gates, 0.5).item() == pytest.approx(0.25**2 + 0.25**2)
    assert exec_loss([None, gates[0]], 0.75).item() == 0.0  # ungated blocks do not count


def test_eqn13_14_flops_loss_by_hand():
    gates = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])]
    r = routing(gates)
    # per-sample MACs 520 and 920: f = 720; network: f_total = 1020; dynamic: (720−20)/1000
    assert r.macs_fraction("network").item() == pytest.approx(720 / 1020)
    assert r.macs_fraction("dynamic").item() == pytest.approx(0.7)
    assert flops_loss(r, 0.5, "network").item() == pytest.approx((720 / 1020 - 0.5) ** 2)
    assert flops_loss(r, 0.5, "dynamic").item() == pytest.approx(0.04)


def test_flops_loss_gradient_pushes_expensive_gates_down():
    g0 = torch.tensor([[1.0, 1.0]], requires_grad=True)
    g1 = torch.tensor([[1.0, 1.0]], requires_grad=True)
    flops_loss(routing([g0, g1]), 0.5).backward()
    assert (g0.grad > 0).all() and (g1.grad > 0).all()
    assert g1.grad[0, 1] > g1.grad[0, 0] > g0.grad[0, 1] > g0.grad[0, 0]  # ∝ sub-block MACs


def test_eqn15_16_total_by_hand():
    gates = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    cats = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])]
    r = routing(gates, cats)
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    labels, categories = torch.tensor([2]), torch.tensor([1])
    cfg = LossConfig(target_rate=0.5, alpha_res=3.0, alpha_cls=0.5)
    out = DMNNLoss(DMNNOptions(alpha_ctg=2.0), cfg)(logits, r, labels, categories)
    l_cls = math.log(3)
    l_exec = (0.5 - 0.5) ** 2 + (0.5 - 1.0) ** 2
    l_flops = ((20 + 100 + 300 + 400) / 1020 - 0.5) ** 2
    l_ctg = 1e-4 * math.log(2) + 1e-3 * math.log(2)
    assert out.total.item() == pytest.approx(2 * l_ctg + 3 * (l_exec + l_flops) + 0.5 * l_cls)
    assert set(out.parts) == {"cls", "exec", "flops", "ctg", "total"}


def test_ablation_switch_turns_category_supervision_off():
    gates = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    r = routing(gates, [torch.tensor([[5.0, 0.0]]), None])
    out = DMNNLoss(DMNNOptions(category_supervision=False))(
        torch.zeros(1, 3), r, torch.tensor([0]), torch.tensor([1]))
    assert "ctg" not in out.parts


def test_static_model_gets_classification_loss_only():
    r = routing([None, None])
    out = DMNNLoss(DMNNOptions())(torch.zeros(1, 4), r, torch.tensor([1]))
    assert out.total.item() == pytest.approx(math.log(4)) and set(out.parts) == {"cls", "total"}


@pytest.mark.parametrize("kwargs,match", [
    ({"target_rate": 0.0}, "target rate"), ({"target_rate": 1.2}, "target rate"),
    ({"exec_target": -0.1}, "exec target"), ({"macs_scope": "all"}, "macs_scope"),
])
def test_bad_loss_config(kwargs, match):
    common = {"target_rate"}
    with pytest.raises(ValueError, match=match):
        (LossConfig if set(kwargs) <= common else DMNNOptions)(**kwargs)


def test_path_balance_is_zero_only_when_every_sub_block_runs_at_rate_e():
    collapsed = [torch.tensor([[1.0, 0.0], [1.0, 0.0]])]  # the same sub-block for every image
    routed = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]  # each image its own sub-block
    assert exec_loss(collapsed, 0.5).item() == 0.0 == exec_loss(routed, 0.5).item()
    # per-path rates (1, 0) vs e = 0.5: mean of 0.25 and 0.25
    assert path_balance_loss(collapsed, 0.5).item() == pytest.approx(0.25)
    assert path_balance_loss(routed, 0.5).item() == 0.0
    two = [collapsed[0], None, torch.tensor([[1.0, 1.0], [0.0, 1.0]])]  # rates (0.5, 1)
    assert path_balance_loss(two, 0.5).item() == pytest.approx(0.25 + 0.125)


def test_dual_multiplier_integrates_the_ratio_error_and_is_checkpointed():
    gates = [torch.ones(2, 2, requires_grad=True), torch.ones(2, 2, requires_grad=True)]
    r = routing(gates)  # all on: f/f_total = 1
    logits = torch.zeros(2, 3, requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = DMNNLoss(DMNNOptions(dual_step=0.5, category_supervision=False),
                    LossConfig(target_rate=0.6))
    first = loss(logits, r, labels)
    assert loss.dual == pytest.approx(0.5 * 0.4)  # λ starts at 0 and takes one step of η·gap
    second = loss(logits, r, labels)
    # the second total carries λ·gap = 0.2 · 0.4 on top of the first
    assert (second.total - first.total).item() == pytest.approx(0.2 * 0.4)
    assert loss.dual == pytest.approx(0.4)
    resumed = DMNNLoss(loss.options, loss.config)
    resumed.load_state_dict(loss.state_dict())
    assert resumed.dual == loss.dual
    with torch.no_grad():  # evaluation does not move λ
        loss(logits.detach(), r, labels)
    assert loss.dual == pytest.approx(0.4)
    forced = routing([g.detach() for g in gates])  # forced gates (warm-up) cannot follow λ
    loss(logits, forced, labels)
    assert loss.dual == pytest.approx(0.4)
