"""ConvNet-AIG on the shared machinery: gate, target-rate loss, training, MACs."""

import json

import pytest
import torch

import dmnn
from dmnn.methods.aig import AIGGate, AIGLoss, target_rate_loss
from dmnn.network.routing import Routing
from dmnn.train.config import resolve_config
from dmnn.train.engine import train


def test_gate_by_hand_at_eval():
    gate = AIGGate(2, hidden=2).eval()
    with torch.no_grad():
        gate.fc1.weight.copy_(torch.eye(2))
        gate.fc1.bias.zero_()
        gate.bn.running_mean.zero_()
        gate.bn.running_var.fill_(1.0 - gate.bn.eps)  # BN is the identity
        gate.fc2.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
        gate.fc2.bias.copy_(torch.tensor([0.1, 0.0]))
    x = torch.zeros(2, 2, 1, 1)
    x[0, :, 0, 0] = torch.tensor([1.0, 0.5])  # h = [1, 0.5]: on-logit 0.5 > 0.1 -> run
    x[1, :, 0, 0] = torch.tensor([0.5, 1.0])  # on-logit -0.5 < 0.1 -> skip
    d = gate(x)
    assert d.gates.tolist() == [[1.0], [0.0]]
    assert gate.inference_macs((64, 8, 8)) == 64 * 2 + 2 * 2


def test_gates_start_open_and_gradients_reach_the_gate():
    model = dmnn.create_model("aig_resnet20").train()
    logits, r = model(torch.randn(16, 3, 32, 32), return_routing=True)
    assert all(g.shape == (16, 1) for g in r.gates)
    assert r.execution_rates().mean() > 0.75  # bias [off, on] = [0.1, 2]
    loss = AIGLoss(0.5)(logits, r, torch.arange(16) % 10)
    loss.total.backward()
    assert all(b.gate.fc2.weight.grad.abs().sum() > 0 for b in model.blocks)


def test_target_rate_loss_by_hand():
    gates = [torch.tensor([[1.0], [1.0], [1.0], [0.0]]), torch.tensor([[1.0], [0.0], [0.0], [0.0]])]
    # z = 0.75 and 0.25; mean of (0.5 − z)² = 0.0625
    assert target_rate_loss(gates, 0.5).item() == pytest.approx(0.0625)
    table = dmnn.create_model("aig_resnet20").macs_table()
    r = Routing(gates=gates + [None] * 7, probs=[None] * 9, category_logits=[None] * 9,
                macs=torch.zeros(4), table=table, stages=[0] * 9)
    out = AIGLoss(0.5, alpha_res=2.0)(torch.zeros(4, 10), r, torch.zeros(4, dtype=torch.long))
    assert out.parts["target"].item() == pytest.approx(0.0625)
    assert out.total.item() == pytest.approx(torch.log(torch.tensor(10.0)).item() + 0.125)


def test_dual_step_integrates_the_mean_rate_gap_and_is_checkpointed():
    # two gated blocks, all on: mean execution rate 1, gap 0.4 from t = 0.6
    table = dmnn.create_model("aig_resnet20").macs_table()

    def routing(gates):
        return Routing(gates=gates + [None] * 7, probs=[None] * 9, category_logits=[None] * 9,
                       macs=torch.zeros(4), table=table, stages=[0] * 9)

    on = [torch.ones(4, 1, requires_grad=True), torch.ones(4, 1, requires_grad=True)]
    logits, labels = torch.zeros(4, 10, requires_grad=True), torch.zeros(4, dtype=torch.long)
    loss = AIGLoss(0.6, dual_step=0.5)
    first = loss(logits, routing(on), labels)
    assert loss.state_dict()["dual"] == pytest.approx(0.5 * 0.4)  # λ: 0, then one step η·gap
    second = loss(logits, routing(on), labels)
    assert (second.total - first.total).item() == pytest.approx(0.2 * 0.4)  # + λ·gap
    assert second.parts["dual"].item() == pytest.approx(0.2)
    resumed = AIGLoss(0.6, dual_step=0.5)
    resumed.load_state_dict(loss.state_dict())
    assert resumed.state_dict() == loss.state_dict() == {"dual": pytest.approx(0.4)}
    with torch.no_grad():  # evaluation does not move λ
        loss(logits.detach(), routing([g.detach() for g in on]), labels)
    assert loss.state_dict()["dual"] == pytest.approx(0.4)
    plain = AIGLoss(0.6)(logits, routing(on), labels)  # η = 0: the paper's loss, no λ
    assert "dual" not in plain.parts and plain.total.item() == pytest.approx(first.total.item())


def test_dual_step_is_one_option_of_both_gated_methods():
    cfg = resolve_config(None, None, {"model": "aig_resnet20", "dual_step": 0.1})
    assert cfg.options.dual_step == 0.1
    assert resolve_config(None, None, {"model": "dmnn_resnet20", "dual_step": 0.2}) \
        .options.dual_step == 0.2


def test_aig_trains_through_the_engine_toward_its_target(tmp_path):
    cfg = resolve_config(None, None, {
        "dataset": "digits", "model": "aig_resnet20", "batch_size": 32, "epochs": 3,
        "max_train_samples": 128, "max_test_samples": 64, "target_rate": 0.3, "lr": 0.1,
        "noise_anneal_from": 1.0,  # the original's constant noise: a short run still decays
    })
    train(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("train_loss_target" in ln for ln in lines)
    ratios = [ln["train_macs_ratio"] for ln in lines]
    assert ratios[-1] < ratios[0] - 0.02, ratios  # moving from all-open toward t = 0.3


def test_twin_is_the_dmnn_model_without_controllers():
    twin = dmnn.create_model("twin_resnet56", num_sub_blocks=2)
    dyn = dmnn.create_model("dmnn_resnet56", num_sub_blocks=2)
    assert [b.sub_block_width for b in twin.blocks] == [b.sub_block_width for b in dyn.blocks]
    assert all(b.gate is None for b in twin.blocks)
    controllers = sum(p.numel() for b in dyn.blocks for p in b.gate.parameters())
    assert twin.num_params() == dyn.num_params() - controllers
    assert twin.macs_table().full == dyn.macs_table().full - dyn.macs_table().controller_total
