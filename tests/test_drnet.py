"""DRNet's equations (3–11) pinned by hand, and DRNet in the shared harness."""

import json
import math

import pytest
import torch
from torch import nn

import dmnn
from dmnn.methods.drnet import (
    DRNet,
    DRNetLoss,
    DRNetRouter,
    consistency_loss,
    cost_loss,
    diversity_loss,
    reg_loss,
    routes,
    set_hard_routing,
)
from dmnn.network.block import GatedBlock
from dmnn.network.gate import GateDecision
from dmnn.network.routing import Routing
from dmnn.train.config import resolve_config
from dmnn.train.engine import train


def test_eqn3_route_by_hand():
    router = DRNetRouter(2, hidden=2, beta=2.0)
    with torch.no_grad():
        router.fc1.weight.copy_(torch.eye(2))
        router.fc1.bias.zero_()
        router.fc2.weight.copy_(torch.eye(2))
        router.fc2.bias.zero_()
    x = torch.zeros(1, 2, 1, 1)
    x[0, 0] = math.log(3.0)  # R(x) = [ln 3, 0]: softmax = [0.75, 0.25]
    # r = softmax(2·[0.75, 0.25])[0] = sigmoid(1)
    assert router.route(x).item() == pytest.approx(1 / (1 + math.exp(-1)))
    router.train()
    assert router(x).gates.item() == pytest.approx(1 / (1 + math.exp(-1)))  # soft in training
    router.eval()
    assert router(x).gates.item() == 1.0  # eqn 11: r ≥ 0.5 runs the block


class FixedRoute(DRNetRouter):
    """A DRNet router whose r is fixed (the block mixes as DRNet's does)."""

    def __init__(self, r):
        super().__init__(1)
        self.r = r

    def forward(self, x, state=None):
        return GateDecision(gates=self.r, probs=self.r)


def scale(k):
    conv = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(conv.weight, k)
    return nn.Sequential(conv)


def test_eqn4_mixing_in_training_and_eqn11_at_test():
    block = GatedBlock([scale(2.0)], nn.Identity(), FixedRoute(torch.tensor([[0.25], [1.0]])))
    x = torch.ones(2, 1, 1, 1)
    out, _ = block.train()(x)
    # F(x) = x + 2x = 3: r·3 + (1 − r)·1 -> 1.5 and 3
    assert out.flatten().tolist() == [1.5, 3.0]
    calls = []
    block.paths[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    block.gate = FixedRoute(torch.tensor([[0.0], [1.0]]))
    out, _ = block.eval()(x)
    assert out.flatten().tolist() == [1.0, 3.0] and calls == [1]  # the skipped row never runs


def test_eqn5_6_10_by_hand():
    route = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]]])  # M = 2 copies of L = 1 sample, n = 2
    # mean route [0.5, 0]; each copy is 0.5 away: [0.5 − 0.2]_+² = 0.09
    assert consistency_loss(route, 0.2).item() == pytest.approx(0.09)
    assert reg_loss(route).item() == pytest.approx(0.5)
    centers = torch.tensor([[[0.0, 0.0], [0.3, 0.4]]])  # one copy of two samples, 0.5 apart
    assert diversity_loss(centers, 1.0).item() == pytest.approx(0.25)
    assert diversity_loss(centers, 0.4).item() == 0.0


def test_routes_are_copy_major():
    g1 = torch.tensor([[0.1], [0.2], [0.3], [0.4]])  # copies of samples a, b: [a0, b0, a1, b1]
    g2 = torch.tensor([[0.5], [0.6], [0.7], [0.8]])
    r = routes([g1, None, g2], copies=2)
    assert r.shape == (2, 2, 2) and r[1, 0].tolist() == pytest.approx([0.3, 0.7])


def test_eqn8_cost_by_hand():
    model = dmnn.create_model("drnet_resnet20")
    table = model.macs_table()
    gates = [torch.full((2, 1), 0.5)] + [torch.zeros(2, 1)] * 8
    r = Routing(gates=gates, probs=gates, category_logits=[None] * 9,
                macs=table.per_sample(gates), table=table, stages=[0] * 9)
    assert cost_loss(r).item() == pytest.approx(0.5 * table.paths[0][0] / table.full)


def test_adaptive_mu_grows_above_target_and_is_checkpointable():
    loss = DRNetLoss(0.3, copies=2, kappa=1.0)
    model = dmnn.create_model("drnet_resnet20").train()
    x = torch.randn(4, 3, 32, 32)
    logits, r = model(x, return_routing=True)
    mu0 = loss.mu
    out = loss(logits, r, torch.zeros(4, dtype=torch.long))
    assert loss.mu > mu0  # routers start near 0.5-1 > r = 0.3
    assert set(out.parts) >= {"consistency", "diversity", "cost", "reg", "mu"}
    other = DRNetLoss(0.3, copies=2)
    other.load_state_dict(json.loads(json.dumps(loss.state_dict())))
    assert other.mu == loss.mu


def test_drnet_trains_with_m_copies(tmp_path):
    cfg = resolve_config(None, None, {
        "dataset": "digits", "model": "drnet_resnet20", "batch_size": 16, "epochs": 2,
        "max_train_samples": 64, "max_test_samples": 32, "copies": 3, "target_rate": 0.5,
    })
    final = train(cfg, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert "train_loss_consistency" in lines[0] and final["epochs"] == 2
    meta = json.loads((tmp_path / "run" / "last.json").read_text())
    assert meta["extra"]["loss_state"]["mu"] > 0


def test_hard_routing_decides_as_at_test_and_freezes_the_routers():
    torch.manual_seed(0)
    model = dmnn.create_model("drnet_resnet20").train()
    x = torch.randn(4, 3, 32, 32)
    assert set_hard_routing(model, True) == 9
    logits, r = model(x, return_routing=True)
    for g in r.gates:
        assert set(g.unique().tolist()) <= {0.0, 1.0}
    loss = DRNetLoss(0.3, copies=2, kappa=1.0)
    mu0 = loss.mu
    loss(logits, r, torch.zeros(4, dtype=torch.long)).total.backward()
    assert loss.mu == mu0  # a fixed cost leaves μ alone
    routers = [m for m in model.modules() if isinstance(m, DRNetRouter)]
    assert all(p.grad is None and not p.requires_grad for m in routers for p in m.parameters())
    assert all(p.grad is not None for p in model.stem.parameters())  # the network still learns
    set_hard_routing(model, False)
    _, r = model(x, return_routing=True)
    assert any(((g > 0) & (g < 1)).any() for g in r.gates)  # soft again
    assert all(p.requires_grad for m in routers for p in m.parameters())


def test_hard_routing_in_training_runs_only_the_executed_rows():
    torch.manual_seed(0)
    block = dmnn.create_model("drnet_resnet20").blocks[1].train()  # 16 → 16 channels
    seen = []
    block.paths[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    set_hard_routing(block, True)
    x = torch.randn(8, 16, 8, 8)
    gates = torch.tensor([1.0, 1.0, 1.0, 0, 0, 0, 0, 0]).unsqueeze(1)
    out = block.gate.execute(block, x, x, GateDecision(gates=gates))
    assert seen == [3]  # F saw (and its BN normalised over) just the rows it serves
    assert torch.equal(out[3:], x[3:])


def test_router_finetune_defaults_and_validation():
    cfg = resolve_config(None, None, {"model": "drnet_resnet20", "epochs": 20})
    assert DRNet.router_finetune(cfg) == 4
    assert DRNet.router_finetune(resolve_config(None, None, {"model": "drnet_resnet20",
                                                             "epochs": 1})) == 0
    with pytest.raises(ValueError, match="drnet_"):
        resolve_config(None, None, {"model": "dmnn_resnet20", "router_finetune_epochs": 2})
    with pytest.raises(ValueError, match=r"\[0, epochs\)"):
        resolve_config(None, None, {"model": "drnet_resnet20", "epochs": 3,
                                    "router_finetune_epochs": 3})


def test_drnet_run_ends_with_frozen_router_epochs(tmp_path):
    cfg = resolve_config(None, None, {
        "dataset": "digits", "model": "drnet_resnet20", "batch_size": 16, "epochs": 3,
        "max_train_samples": 64, "max_test_samples": 32, "router_finetune_epochs": 1,
    })
    train(cfg, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(ln) for ln in lines]
    assert [r["routers_frozen"] for r in rows] == [0, 0, 1]
    assert rows[1]["train_loss_mu"] != rows[0]["train_loss_mu"]  # μ adapts while routers learn
    final_mu = json.loads((tmp_path / "run" / "last.json").read_text())["extra"]["loss_state"]["mu"]
    assert rows[2]["train_loss_mu"] == pytest.approx(final_mu, rel=1e-6)  # then stands still
