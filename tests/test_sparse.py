"""Sparse executor: equals the masked dense evaluation for each DMNN model; off paths never run."""

import pytest
import torch

import dmnn
from dmnn.evaluation.latency import static_twin
from dmnn.execution.forcing import force_gates

DMNN_MODELS = [n for f in ("dmnn", "aig", "drnet", "lcnet") for n in dmnn.list_models(f)]


def outputs(model, x, spec, seed=0):
    out = {}
    for mode in ("dense", "sparse"):
        model.set_execution(mode)
        with torch.inference_mode(), force_gates(model, spec, seed=seed):
            out[mode] = model(x)
    return out["dense"], out["sparse"]


def settle_batchnorm(model, size):
    """Give BN running statistics of real activations, as training would. With the init stats
    a deep untrained net amplifies activations to ~1e4 (ResNet-101), where fp32 rounding of
    the different row counts alone exceeds an absolute 1e-5."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the stats
    model.train()
    with torch.no_grad(), force_gates(model, "on"):
        model(torch.randn(32, 3, size, size))
    return model.eval()


@pytest.fixture
def two_threads():
    """ATen picks a conv kernel per call: at 1 thread a 1×1 conv on < 16 rows goes to
    `_slow_conv2d_forward`, on 16 rows to oneDNN, so a gathered subset and the full batch round
    differently (≈2e-5 after ResNet-101's 33 blocks). With ≥ 2 threads both take oneDNN."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", DMNN_MODELS)
def test_sparse_equals_masked_dense(name, two_threads):
    model = dmnn.create_model(name)
    size = 64 if model.default_input_size > 64 else 32  # equivalence does not depend on size
    model = settle_batchnorm(model, size)
    for batch, specs in ((1, [0.5, "on", "off"]), (16, [0.5, "on", "off"])):
        x = torch.randn(batch, 3, size, size)
        for spec in specs:
            if name.startswith("lcnet_"):
                # sliced convs sum in another order; the untrained net amplifies float32
                # rounding through its depth, so compare in float64
                model, x = model.double(), x.double()
            dense, sparse = outputs(model, x, spec, seed=batch)
            assert (dense - sparse).abs().max().item() <= 1e-5, (batch, spec)


def test_mixed_batch_really_mixes_paths():
    model = dmnn.create_model("dmnn_resnet20").eval()
    with torch.inference_mode(), force_gates(model, 0.5, seed=16):
        _, r = model(torch.randn(16, 3, 32, 32), return_routing=True)
    counts = torch.stack([g.sum(0) for g in r.gates])
    assert ((counts > 0) & (counts < 16)).float().mean() > 0.8


def test_all_off_runs_no_sub_block_and_all_on_runs_each_once():
    model = dmnn.create_model("dmnn_mobilenetv2").eval()
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1

    for block in model.blocks:
        for path in block.paths:
            path.register_forward_hook(hook)
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode(), force_gates(model, "off"):
        model(x)
    assert calls["n"] == 0
    with torch.inference_mode(), force_gates(model, "on"):
        model(x)
    assert calls["n"] == sum(b.num_sub_blocks for b in model.blocks)


def test_eval_default_is_sparse_and_matches_static_twin_when_all_on():
    model = dmnn.create_model("dmnn_resnet56").eval()
    twin = static_twin(model).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode(), force_gates(model, "on"):
        assert (model(x) - twin(x)).abs().max().item() <= 1e-5
    assert all(b.gate is None for b in twin.blocks) and all(b.gate for b in model.blocks)


def test_inference_mode_and_no_grad_give_the_same_result():
    model = dmnn.create_model("dmnn_resnet20").eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        a, ra = model(x, return_routing=True)
    with torch.no_grad():
        b, rb = model(x, return_routing=True)
    assert torch.equal(a, b) and torch.equal(ra.macs, rb.macs)


def test_dense_above_runs_mostly_on_paths_on_the_whole_batch_with_the_same_result():
    model = dmnn.create_model("dmnn_resnet20").eval()
    x = torch.randn(8, 3, 32, 32)
    rows_seen = []
    model.blocks[4].paths[0].register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape[0]))
    pattern = [torch.ones(2) for _ in model.blocks]
    pattern[4] = torch.tensor([[1.0, 1.0]] * 6 + [[0.0, 1.0]] * 2)  # path 0 on for 6 of 8 rows
    with torch.inference_mode(), force_gates(model, pattern):
        strict = model(x)
        model.blocks[4].dense_above = [0.7, 1.0]
        fast = model(x)
    assert rows_seen == [6, 8]  # strict: gathered 6 rows; calibrated: ran all 8 and masked
    assert (strict - fast).abs().max().item() <= 1e-5


def test_calibration_sets_a_threshold_per_sub_block():
    from dmnn.execution.autotune import autotune_sparse

    model = dmnn.create_model("dmnn_resnet20").eval()
    chosen = autotune_sparse(model, torch.randn(8, 3, 32, 32), repeats=1)
    assert sorted(chosen) == list(range(9))
    assert all(len(t) == 2 and all(0.5 <= v <= 1.0 for v in t) for t in chosen.values())
    assert [b.dense_above for b in model.blocks] == [chosen[i] for i in range(9)]
    with pytest.raises(ValueError, match="at least 2"):
        autotune_sparse(model, torch.randn(1, 3, 32, 32))
