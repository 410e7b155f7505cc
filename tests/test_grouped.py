"""Grouped execution equals the per-sub-block definition (dense execution) of eqn 4.

Same logits, same gradients for every parameter and gate, same BatchNorm running statistics and
counters, same random-number consumption; plus eval agreement and dense fallbacks. No timing.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dmnn
from dmnn.execution import bn_sum
from dmnn.execution import dispatch as executor
from dmnn.execution.bn_sum import bn_gated_sum
from dmnn.execution.dispatch import EXECUTION_MODES, run_dense, run_paths
from dmnn.execution.grouped import (
    _batch_norm,
    gated_sum,
    make_plan,
    plan_for,
    try_run_grouped,
)

MODELS = {
    "dmnn_resnet20": {},
    "dmnn_resnet50_cifar": {"width_mult": 0.25},
    "dmnn_mobilenetv2": {"num_classes": 10},
}


def build(name: str, dtype: torch.dtype = torch.float64) -> dmnn.DynamicNet:
    torch.manual_seed(0)
    model = dmnn.create_model(name, **MODELS[name]).to(dtype)
    # non-trivial BN affine parameters and statistics, so that a mixed-up slice would show
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def train_step(model: dmnn.DynamicNet, mode: str, x: torch.Tensor, y: torch.Tensor):
    """One forward/backward/SGD step with a loss that reaches the gates; returns what to compare."""
    model.train()
    model.set_execution(mode)
    torch.manual_seed(1)  # the controllers' Gumbel noise
    logits, routing = model(x, return_routing=True)
    rng_after = torch.get_rng_state()
    for g in routing.gates:
        if g is not None:
            g.retain_grad()
    for extra in routing.extras:
        if "logits" in extra:
            extra["logits"].retain_grad()
    loss = F.cross_entropy(logits, y) + (routing.macs.mean() / routing.table.full).to(x.dtype)
    loss = loss + 0.1 * logits.pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    gate_grads = [g.grad.clone() for g in routing.gates if g is not None]
    gate_logit_grads = [e["logits"].grad.clone() for e in routing.extras if "logits" in e]
    torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()
    gates = [g.detach() for g in routing.gates if g is not None]
    return logits.detach(), gates, grads, gate_grads, gate_logit_grads, rng_after


def assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float) -> None:
    assert a.keys() == b.keys(), "grouped execution must reach exactly the dense parameters"
    for name in a:
        scale = max(a[name].abs().max().item(), 1e-6)
        diff = (a[name] - b[name]).abs().max().item()
        assert diff <= rel * scale, f"{name}: grad differs by {diff:.3g} (scale {scale:.3g})"


def assert_state_equal(m1: nn.Module, m2: nn.Module, atol: float) -> None:
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for key in s1:
        if key.endswith("num_batches_tracked"):
            assert torch.equal(s1[key], s2[key]), key
        else:
            torch.testing.assert_close(s1[key], s2[key], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_block_is_grouped(name):
    """No silent fallback on the registered architectures (incl. MobileNetV2's t = 1 slices)."""
    model = build(name, torch.float32)
    for block in model.gated_blocks:
        assert make_plan(block.paths) is not None, f"block {block.index} would run dense"


@pytest.mark.parametrize("name", list(MODELS))
def test_grouped_equals_dense_in_training(name):
    dense = build(name)
    grouped = copy.deepcopy(dense)
    torch.manual_seed(2)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    ref = train_step(dense, "dense", x, y)
    out = train_step(grouped, "grouped", x, y)
    for a, b in zip(ref[1], out[1], strict=True):
        assert torch.equal(a, b), "same seed, same features: the gates must agree"
    assert torch.equal(ref[5], out[5]), "grouped execution must not draw random numbers"
    assert (ref[0] - out[0]).abs().max().item() <= 1e-5
    assert_grads_close(ref[2], out[2], 1e-4)
    for a, b in zip(ref[3] + ref[4], out[3] + out[4], strict=True):
        assert (a - b).abs().max().item() <= 1e-4 * max(a.abs().max().item(), 1e-6)
    # running_mean / running_var / num_batches_tracked, and the parameters after the SGD step
    assert_state_equal(dense, grouped, atol=1e-10)


def test_grouped_equals_dense_float32():
    """In float32 the gap is rounding only (tolerances of the issue)."""
    dense = build("dmnn_resnet20", torch.float32)
    grouped = copy.deepcopy(dense)
    torch.manual_seed(2)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    ref = train_step(dense, "dense", x, y)
    out = train_step(grouped, "grouped", x, y)
    assert (ref[0] - out[0]).abs().max().item() <= 1e-5
    assert_grads_close(ref[2], out[2], 1e-4)
    assert_state_equal(dense, grouped, atol=1e-5)


def test_grouped_channels_last():
    dense = build("dmnn_resnet20").to(memory_format=torch.channels_last)
    grouped = copy.deepcopy(dense)
    torch.manual_seed(2)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 10, (6,))
    ref = train_step(dense, "dense", x, y)
    out = train_step(grouped, "grouped", x, y)
    assert (ref[0] - out[0]).abs().max().item() <= 1e-5
    assert_grads_close(ref[2], out[2], 1e-4)
    assert_state_equal(dense, grouped, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_eval_modes_agree(name):
    model = build(name).eval()
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    outs = {}
    with torch.no_grad():
        for mode in ("dense", "grouped", "sparse", "auto"):
            model.set_execution(mode)
            outs[mode] = model(x)
    for mode in ("grouped", "sparse", "auto"):
        assert (outs[mode] - outs["dense"]).abs().max().item() <= 1e-10, mode
    stats = [m.num_batches_tracked.item() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert set(stats) == {0}, "eval must not touch the running statistics"


def test_auto_uses_grouped_in_training_and_fused_at_eval(monkeypatch):
    assert "grouped" in EXECUTION_MODES
    calls: list[str] = []
    real_grouped, real_dense, real_sparse = (
        executor.try_run_grouped, executor.run_dense, executor.run_sparse
    )

    def grouped(*args):
        out = real_grouped(*args)
        calls.append("grouped" if out is not None else "fallback")
        return out

    monkeypatch.setattr(executor, "try_run_grouped", grouped)
    def recorded(name, fn):
        return lambda *a, **k: calls.append(name) or fn(*a, **k)

    monkeypatch.setattr(executor, "run_dense", recorded("dense", real_dense))
    monkeypatch.setattr(executor, "run_sparse", recorded("sparse", real_sparse))
    real_fused = executor.run_fused
    monkeypatch.setattr(executor, "run_fused", recorded("fused", real_fused))
    model = build("dmnn_resnet20", torch.float32)
    x = torch.randn(4, 3, 32, 32)
    gated = len(model.gated_blocks)
    model.set_execution("auto")
    model.train()(x)
    assert calls == ["grouped"] * gated
    calls.clear()
    model.set_execution("dense")
    model(x)
    assert calls == ["dense"] * gated
    calls.clear()
    model.set_execution("auto")
    with torch.no_grad():
        model.eval()(x)
    assert calls == ["fused"] * gated  # static-width ResNet blocks: no sparse fallback
    calls.clear()
    model.set_execution("sparse")
    with torch.no_grad():
        model(x)
    assert calls == ["sparse"] * gated


def test_hooked_paths_run_dense():
    """A hook on a path module (e.g. pruning's weight pre-hook) must still fire: no fusion."""
    model = build("dmnn_resnet20", torch.float32).train()
    seen = []
    handle = model.blocks[0].paths[1][3].register_forward_hook(lambda *a: seen.append(1))
    assert plan_for(model.blocks[0].paths) is None
    model.set_execution("grouped")
    model(torch.randn(2, 3, 32, 32))
    assert seen == [1]
    handle.remove()
    assert plan_for(model.blocks[0].paths) is not None


def conv_bn_path(c_in: int, width: int, c_out: int, act: type[nn.Module] = nn.ReLU):
    return nn.Sequential(
        nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), act(),
        nn.Conv2d(width, c_out, 1, bias=True), nn.BatchNorm2d(c_out),
    )


def test_unrecognised_paths_fall_back_to_dense():
    odd = [nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sigmoid()) for _ in range(2)]
    mixed = [conv_bn_path(4, 2, 4), conv_bn_path(4, 3, 4)]
    momentum_none = [conv_bn_path(4, 2, 4) for _ in range(2)]
    for path in momentum_none:
        path[1].momentum = None
    single = [conv_bn_path(4, 2, 4)]
    x, gates = torch.randn(3, 4, 5, 5), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    for paths in (odd, mixed, momentum_none):
        assert make_plan(paths) is None
        assert try_run_grouped(paths, x, gates, x) is None
        torch.testing.assert_close(
            run_paths(paths, x, gates, x, "grouped", True), run_dense(paths, x, gates, x)
        )
    assert make_plan(single) is None


def test_mixed_bn_modes_fall_back_without_touching_statistics():
    paths = nn.ModuleList([conv_bn_path(4, 2, 4) for _ in range(2)])
    paths[1][1].eval()
    x, gates = torch.randn(3, 4, 5, 5), torch.ones(3, 2)
    assert plan_for(paths) is not None
    assert try_run_grouped(paths, x, gates, x) is None
    assert all(m.num_batches_tracked.item() == 0 for m in paths.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_plan_cache_follows_replaced_modules():
    paths = nn.ModuleList([conv_bn_path(4, 2, 4) for _ in range(2)])
    assert plan_for(paths) is not None
    paths[0][2] = nn.Sigmoid()
    assert plan_for(paths) is None


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
def test_small_paths_with_bias_no_shortcut_and_soft_gates(act):
    """Conv bias, ReLU6, base=None and non-binary gates (a soft-gated method) all match."""
    torch.manual_seed(0)
    paths = nn.ModuleList([conv_bn_path(3, 4, 5, act) for _ in range(3)]).double()
    twin = copy.deepcopy(paths)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    gates = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    gates2 = gates.detach().clone().requires_grad_()
    ref = run_dense(paths, x, gates, None)
    out = run_paths(twin, x2, gates2, None, "grouped", True)
    torch.testing.assert_close(out, ref)
    ref.square().sum().backward()
    out.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    torch.testing.assert_close(gates2.grad, gates.grad)
    for p, q in zip(paths.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad)
    assert_state_equal(paths, twin, atol=1e-12)


def test_gated_sum_by_hand():
    h = torch.arange(2 * 4 * 1 * 1, dtype=torch.float32).view(2, 4, 1, 1)  # N = 2 groups of 2
    gates = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    base = torch.full((2, 2, 1, 1), 10.0)
    out = gated_sum(h, gates, base)
    assert out.flatten().tolist() == [10.0, 11.0, 10 + 0.5 * 4 + 2 * 6, 10 + 0.5 * 5 + 2 * 7]


def bn_column(n: int, c: int, dtype: torch.dtype = torch.float64) -> list[nn.BatchNorm2d]:
    torch.manual_seed(3)
    bns = [nn.BatchNorm2d(c).to(dtype) for _ in range(n)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.1, 0.1)
    return bns


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("with_base", [True, False])
def test_bn_gated_sum_equals_batch_norm_then_gated_sum(layout, with_base):
    """The fused closing BN: same output, gradients of z, gates, base, γ, β, same statistics."""
    n, c = 3, 4
    bns = bn_column(n, c)
    twin = copy.deepcopy(bns)
    torch.manual_seed(4)
    z = (torch.randn(5, n * c, 6, 6, dtype=torch.float64) * 2 + 0.7).contiguous(
        memory_format=layout).requires_grad_()
    gates = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.3, 2.0, 0.0],
                          [0.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    base = torch.randn(5, c, 6, 6, dtype=torch.float64).contiguous(memory_format=layout)
    base = base.requires_grad_() if with_base else None
    out = bn_gated_sum(bns, z, gates, base)
    assert out is not None
    ref = gated_sum(_batch_norm(twin, z), gates, base)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    inputs = [z, gates] + ([base] if with_base else [])
    params = [p for bn in bns for p in (bn.weight, bn.bias)]
    twin_params = [p for bn in twin for p in (bn.weight, bn.bias)]
    got = torch.autograd.grad(out, inputs + params, grad)
    want = torch.autograd.grad(ref, inputs + twin_params, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    for bn, t in zip(bns, twin, strict=True):
        torch.testing.assert_close(bn.running_mean, t.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(bn.running_var, t.running_var, rtol=0, atol=1e-12)
        assert bn.num_batches_tracked.item() == t.num_batches_tracked.item() == 1


def test_bn_gated_sum_statistics_survive_a_large_mean():
    """μ = 1000·σ in float32: E[z²] − E[z]² alone would lose the variance (~6 % off); the
    centred second pass keeps it to float32 rounding."""
    bns = bn_column(2, 3, torch.float32)
    torch.manual_seed(5)
    z = torch.randn(8, 6, 5, 5) + 1000.0
    gates = torch.ones(8, 2)
    bn_gated_sum(bns, z, gates, None)
    exact = z.double().var(dim=(0, 2, 3), correction=1)
    got = torch.cat([bn.running_var for bn in bns]).double()
    expected = 0.9 * 1.0 + 0.1 * exact  # momentum 0.1 from the initial 1
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_bn_gated_sum_runs_only_where_it_applies(monkeypatch):
    """Training-mode closing BNs of the grouped stack use it; eval, one value per channel and
    low precision leave BN and the gated sum apart."""
    calls = []
    real = bn_sum._BNGatedSum.apply
    monkeypatch.setattr(bn_sum._BNGatedSum, "apply", lambda *a: calls.append(1) or real(*a))
    model = build("dmnn_resnet20", torch.float32)
    model.train().set_execution("grouped")
    model(torch.randn(4, 3, 32, 32))
    assert len(calls) == len(model.gated_blocks)
    calls.clear()
    model.eval().set_execution("grouped")
    model(torch.randn(4, 3, 32, 32))
    assert calls == []
    bns = bn_column(2, 3, torch.float32)
    assert bn_gated_sum(bns, torch.randn(1, 6, 1, 1), torch.ones(1, 2), None) is None
    assert bn_gated_sum(bns, torch.randn(2, 6, 2, 2).bfloat16(), torch.ones(2, 2), None) is None
    for bn in bns:
        bn.eval()
    assert bn_gated_sum(bns, torch.randn(2, 6, 2, 2), torch.ones(2, 2), None) is None
    assert all(bn.num_batches_tracked.item() == 0 for bn in bns)
