"""The fused inference executor (BN folded, on-paths as one stack per gate pattern): the same
function as masked dense for every registered model, off paths never read, folded weights never
stale, checkpoints unchanged."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
from torch import nn

import dmnn
from dmnn import force_gates
from dmnn.execution import fused

MODELS = dmnn.list_models()


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so that folding changes every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.4 + 0.8)
                m.weight.copy_(torch.rand(c, generator=g) * 0.4 + 0.8)
                m.bias.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)


def build(name: str) -> tuple[dmnn.DynamicNet, int]:
    torch.manual_seed(0)
    model = dmnn.create_model(name, num_classes=10).eval()
    randomize_bn(model)
    return model, 32  # the ImageNet backbones too: 1×1 at the last stage, and fast


def outputs(model, x, spec) -> dict[str, torch.Tensor]:
    out = {}
    gates = force_gates(model, spec) if model.is_dynamic else contextlib.nullcontext()
    with torch.inference_mode(), gates:
        for mode in ("auto", "dense"):
            model.set_execution(mode)
            out[mode] = model(x)
    model.set_execution("auto")
    return out


def close(out: dict[str, torch.Tensor]) -> float:
    scale = out["dense"].abs().max().item()
    error = (out["auto"] - out["dense"]).abs().max().item() / max(scale, 1e-6)
    return error if out["dense"].dtype == torch.float32 else error * 1e5  # fp64: to 1e-9


@pytest.fixture(autouse=True)
def _default_dtype():
    yield
    torch.set_default_dtype(torch.float32)


FP64 = {"lcnet_resnet101", "lcnet_resnet110"}
"""Compared in float64 (to 1e-9): in fp32 their unfolded sliced executor already differs from
masked dense by ~7e-4 of the logit scale (33+ blocks of sliced convs amplify rounding), so fp32
cannot tell folding errors from that; in fp64 fused and dense agree to 2e-12."""


@pytest.mark.parametrize("name", MODELS)
def test_fused_equals_masked_dense(name):
    model, size = build(name)
    if name in FP64:
        torch.set_default_dtype(torch.float64)
        model.double()
    if not model.is_dynamic:  # static backbones and twins: folded against unfolded
        assert close(outputs(model, torch.randn(4, 3, size, size), None)) <= 1e-4
        return
    sizes = [b.num_sub_blocks for b in model.blocks]
    x1 = torch.randn(1, 3, size, size)
    for bits in itertools.product((0.0, 1.0), repeat=max(sizes)):  # every pattern, batch 1
        pattern = [torch.tensor([bits[:n]]) for n in sizes]
        assert close(outputs(model, x1, pattern)) <= 1e-4, bits
    g = torch.Generator().manual_seed(1)
    mixed = [torch.randint(0, 2, (16, n), generator=g).float() for n in sizes]
    assert close(outputs(model, torch.randn(16, 3, size, size), mixed)) <= 1e-4
    x4 = torch.randn(4, 3, size, size)
    for spec in ("on", "off"):
        assert close(outputs(model, x4, spec)) <= 1e-4, spec


def test_fused_is_what_eval_runs():
    """``auto`` at eval fuses every block of DMNN, AIG, DRNet and the static backbone."""
    for name in ("dmnn_resnet50", "aig_resnet20", "drnet_resnet20", "resnet50",
                 "dmnn_mobilenetv2"):
        model, size = build(name)
        before = len(fused._CACHES)
        gates = force_gates(model, "on") if model.is_dynamic else contextlib.nullcontext()
        with torch.inference_mode(), gates:
            model(torch.randn(2, 3, size, size))
        assert len(fused._CACHES) - before == len(model.blocks), name


@pytest.fixture
def mixed_split(request):
    """The mixed-batch split a test sets on its model (a model setting: no global to restore)."""
    return request.param


@pytest.mark.parametrize("mixed_split", ["pattern", "path"], indirect=True)
def test_off_paths_are_never_read(mixed_split):
    """NaN in every off sub-block: the output stays finite and equal to masked dense's, with a
    mixed batch split by pattern or by path."""
    model, size = build("dmnn_resnet50")
    model.set_execution("auto", mixed_split=mixed_split)
    x = torch.randn(6, 3, size, size)
    pattern = [torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 0.0]] * 3) for _ in model.blocks]
    reference = outputs(model, x, pattern)["dense"]
    with torch.no_grad():
        for block in model.blocks:
            for p in block.paths[1].parameters():
                p.fill_(float("nan"))
            block.paths[1][1].running_mean.fill_(float("nan"))
    with torch.inference_mode(), force_gates(model, pattern):
        out = model(x)
    assert torch.isfinite(out).all() and (out - reference).abs().max().item() <= 1e-4


def test_folded_weights_follow_parameter_changes_and_training():
    model, size = build("dmnn_resnet20")
    x = torch.randn(8, 3, size, size)
    pattern = [torch.randint(0, 2, (8, 2), generator=torch.Generator().manual_seed(i)).float()
               for i in range(len(model.blocks))]
    first = outputs(model, x, pattern)
    assert close(first) <= 1e-4
    with torch.no_grad():  # an in-place update, as an optimizer step makes
        model.blocks[3].paths[0][0].weight.mul_(1.5)
        model.blocks[5].paths[1][1].running_var.mul_(3.0)
    changed = outputs(model, x, pattern)
    assert close(changed) <= 1e-4 and (changed["auto"] - first["auto"]).abs().max() > 1e-3
    model.train()  # one training step moves weights and BN statistics
    assert not fused._CACHES.get(model.blocks[0].paths)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.randn(8, 3, size, size)).sum().backward()
    opt.step()
    model.eval()
    assert close(outputs(model, x, pattern)) <= 1e-4
    model.load_state_dict(dmnn.create_model("dmnn_resnet20", num_classes=10).state_dict())
    assert close(outputs(model, x, pattern)) <= 1e-4  # load_state_dict copies in place


def test_folded_weights_follow_replaced_tensors_and_layers():
    # the cache checks version counters and storage; a replaced parameter, buffer or layer is
    # caught through torch's registration hooks (the next check compares identities)
    model, size = build("dmnn_resnet20")
    x = torch.randn(8, 3, size, size)
    pattern = [torch.randint(0, 2, (8, 2), generator=torch.Generator().manual_seed(i)).float()
               for i in range(len(model.blocks))]
    before = outputs(model, x, pattern)["auto"]
    path = model.blocks[4].paths[0]
    path[0].weight = nn.Parameter(path[0].weight.detach() * 1.5)
    path[1].running_mean = path[1].running_mean + 0.5
    replaced = outputs(model, x, pattern)
    assert close(replaced) <= 1e-4 and (replaced["auto"] - before).abs().max() > 1e-3
    other = model.blocks[6].paths[1]
    other[3] = nn.Conv2d(other[3].in_channels, other[3].out_channels, 3, padding=1, bias=False)
    swapped = outputs(model, x, pattern)
    assert close(swapped) <= 1e-4 and (swapped["auto"] - replaced["auto"]).abs().max() > 1e-3
    with torch.no_grad():  # the folded stem follows its weights too
        model.stem[0].weight.mul_(0.5)
    stem = outputs(model, x, pattern)
    assert close(stem) <= 1e-4 and (stem["auto"] - swapped["auto"]).abs().max() > 1e-3
    model.stem[1] = nn.BatchNorm2d(16).eval()  # and a replaced stem layer
    assert close(outputs(model, x, pattern)) <= 1e-4


def test_state_dict_is_the_unfolded_one():
    model, size = build("dmnn_resnet50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode(), force_gates(model, 0.5, seed=3):
        model(torch.randn(4, 3, size, size))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lcnet_slices_the_folded_weights(monkeypatch):
    """LC-Net at eval slices its folded convs; the unfolded slicing is not called."""
    from dmnn.methods import lcnet

    model, size = build("lcnet_resnet20")
    x = torch.randn(8, 3, size, size)
    with torch.inference_mode():
        model.set_execution("dense")
        reference = model(x)
        model.set_execution("auto")
        monkeypatch.setattr(lcnet, "path_sliced", lambda *a: pytest.fail("unfolded path ran"))
        out = model(x)
    assert (out - reference).abs().max().item() <= 1e-4 * reference.abs().max().item()


def test_pattern_cache_is_bounded(monkeypatch):
    """More patterns than the cache holds: the oldest go, results stay right."""
    monkeypatch.setattr(fused, "MAX_PATTERNS", 2)
    model, size = build("dmnn_resnet20")
    g = torch.Generator().manual_seed(4)
    mixed = [torch.randint(0, 2, (16, 2), generator=g).float() for _ in model.blocks]
    assert close(outputs(model, torch.randn(16, 3, size, size), mixed)) <= 1e-4
    sizes = [len(fused._CACHES[b.paths].stacks) for b in model.blocks]
    assert max(sizes) == 2  # three non-empty patterns met, two kept


@pytest.mark.parametrize("name", ["dmnn_resnet20", "dmnn_resnet50", "dmnn_mobilenetv2",
                                  "lcnet_resnet20", "resnet20"])
def test_fused_equals_masked_dense_in_channels_last(name):
    """The same in the channels-last layout, which gathers, scatters and folded weights keep."""
    from dmnn.execution.sparse import gather

    model, size = build(name)
    model.to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    mixed = [torch.randint(0, 2, (16, b.num_sub_blocks), generator=g).float()
             for b in model.blocks]
    assert close(outputs(model, x, mixed if model.is_dynamic else None)) <= 1e-4
    rows = gather(x, torch.tensor([0, 3, 5]))
    assert rows.is_contiguous(memory_format=torch.channels_last) and torch.equal(rows, x[[0, 3, 5]])


@pytest.mark.parametrize("name", ["dmnn_resnet20", "dmnn_resnet50", "dmnn_mobilenetv2"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("mixed_split", ["path"], indirect=True)
def test_split_by_path_equals_masked_dense(name, layout, mixed_split):
    """Mixed patterns run one sub-block at a time on its on rows: still eqn 4 exactly, with
    all-on, all-off and single-path blocks in the same batch."""
    model, size = build(name)
    model.set_execution("auto", mixed_split=mixed_split)
    assert {b.mixed_split for b in model.blocks} == {"path"}
    model.to(memory_format=layout)
    x = torch.randn(16, 3, size, size).contiguous(memory_format=layout)
    g = torch.Generator().manual_seed(5)
    mixed = [torch.randint(0, 2, (16, b.num_sub_blocks), generator=g).float()
             for b in model.blocks]
    mixed[0][:4] = 1.0  # the rows of every pattern, at N = 2 and at MobileNetV2's N
    mixed[0][4:6] = 0.0
    assert close(outputs(model, x, mixed)) <= 1e-4
    built = {p for b in model.blocks if b.paths in fused._CACHES
             for p in fused._CACHES[b.paths].stacks}
    assert built and all(len(p) == 1 for p in built)  # only one-path stacks were ever built


def test_auto_split_takes_the_fewer_calls():
    """Three patterns of two paths: by path (2 calls); two patterns of two paths: by pattern."""
    def by_path(counts):
        return fused._by_path(counts, fused._path_counts(counts, 2), "auto")

    assert fused._path_counts([1, 3, 2, 4], 2) == [7, 6]
    assert by_path([1, 3, 2, 4])
    assert not by_path([0, 3, 0, 4])
    assert not by_path([5, 3, 0, 0])  # one pattern: one fused call either way
    with pytest.raises(ValueError, match="mixed split"):
        build("dmnn_resnet20")[0].set_execution("auto", mixed_split="rows")


def test_eval_with_autograd_gives_the_parameters_their_gradients():
    # folded weights are detached: with autograd on, the eval executors run unfolded, so a model
    # differentiated in eval mode (saliency, adversarial inputs) gets dense mode's gradients
    model, size = build("dmnn_resnet20")
    x = torch.randn(4, 3, size, size)
    grads = {}
    for mode in ("auto", "dense"):
        model.zero_grad()
        model.set_execution(mode)
        with force_gates(model, "on"):
            model(x).square().sum().backward()
        grads[mode] = model.stem[0].weight.grad.clone()
    model.set_execution("auto")
    torch.testing.assert_close(grads["auto"], grads["dense"], rtol=1e-4, atol=1e-5)
