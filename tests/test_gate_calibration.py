"""Post-training gate calibration: the offset, the bisection, the data it sees, the engine step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_data_imagefolder import make_folder

from dmnn import create_model
from dmnn.data import ArraySplit, Batch, TensorBatchLoader, load_dataset, normalize
from dmnn.methods.aig import AIGGate
from dmnn.methods.dmnn import DMNNController
from dmnn.methods.drnet import DRNetRouter
from dmnn.methods.lcnet import LCGate
from dmnn.train.calibration import (
    CANDIDATES,
    TRAINS,
    calibrate_gates,
    can_calibrate,
    finetune_hard,
    greedy_offsets,
    measure,
    reestimate_bn,
)
from dmnn.train.checkpoint import CheckpointError, load_weights, read_checkpoint
from dmnn.train.config import resolve_config
from dmnn.train.engine import Trainer, train


def batches(n: int = 48, size: int = 16, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return [Batch(x[i:i + 16], y[i:i + 16], y[i:i + 16] % 2) for i in range(0, n, 16)]


def settled(name: str, **kw) -> torch.nn.Module:
    model = create_model(name, num_classes=10, **kw)
    model.train()
    with torch.no_grad():  # running BN stats from real activations, not the init (1, 0)
        for b in batches(seed=1):
            model(b.images)
    return model.eval()


def test_dmnn_shift_moves_every_on_logit_by_delta_and_nothing_else():
    ctrl = DMNNController(8, num_sub_blocks=3, hidden_dim=4).eval()
    x = torch.randn(5, 8, 4, 4)
    before = ctrl(x).extras["logits"]
    ctrl.shift_on_logit(0.75)
    after = ctrl(x).extras["logits"]
    torch.testing.assert_close(after[..., 1] - before[..., 1], torch.full((5, 3), 0.75))
    torch.testing.assert_close(after[..., 0], before[..., 0])


def test_aig_shift_moves_the_on_logit_by_delta():
    gate = AIGGate(8).eval()
    x = torch.randn(5, 8, 4, 4)
    before = gate(x).extras["logits"]
    gate.shift_on_logit(-1.5)
    diff = gate(x).extras["logits"] - before
    torch.testing.assert_close(diff, torch.tensor([0.0, -1.5]).expand(5, 1, 2))


def test_drnet_shift_moves_the_eqn11_threshold_by_delta():
    router = DRNetRouter(4, hidden=2).eval()
    with torch.no_grad():  # R(x) = [exec, skip] = [0, 0.3] for every input: skipped
        router.fc2.weight.zero_()
        router.fc2.bias.copy_(torch.tensor([0.0, 0.3]))
    x = torch.randn(3, 4, 2, 2)
    assert router(x).gates.sum().item() == 0
    router.shift_on_logit(0.2)  # 0.2 < 0.3: still skipped
    assert router(x).gates.sum().item() == 0
    router.shift_on_logit(0.2)  # 0.4 ≥ 0.3: runs
    assert router(x).gates.sum().item() == 3
    assert router.fc2.bias.tolist() == pytest.approx([0.4, 0.3])


def test_lcnet_shift_prunes_saliences_at_or_below_the_threshold_at_eval():
    gate = LCGate(4, 3).eval()
    with torch.no_grad():  # saliences: block 0.1, channels [0, 0.05, 0.5], for any input
        gate.l_fc.weight.zero_()
        gate.c_fc.weight.zero_()
        gate.l_fc.bias.fill_(0.1)
        gate.c_fc.bias.copy_(torch.tensor([-0.1, 0.05, 0.5]))
    x = torch.randn(2, 4, 3, 3)
    gate.shift_on_logit(0.3)  # δ > 0: threshold max(0, −0.3) = 0, nothing changes
    d = gate(x)
    assert d.executed.tolist() == [[1.0], [1.0]] and d.inactive.tolist() == [1.0, 1.0]
    gate.shift_on_logit(-0.38)  # threshold 0.08: channel 1 (0.05) drops, the rest keep values
    d = gate(x)
    torch.testing.assert_close(d.gates, torch.full((2, 1), 0.1))
    torch.testing.assert_close(d.extras["channel"], torch.tensor([[0.0, 0.0, 0.5]] * 2))
    assert d.inactive.tolist() == [2.0, 2.0]
    gate.shift_on_logit(-0.03)  # threshold 0.11: the block (0.1) is skipped
    assert gate(x).executed.sum().item() == 0
    gate.train()  # training is untouched by the threshold
    torch.testing.assert_close(gate(x).gates, torch.full((2, 1), 0.1))


def test_lcnet_threshold_is_saved_and_old_checkpoints_load_with_none():
    model = create_model("lcnet_resnet20", num_classes=10)
    model.blocks[0].gate.shift_on_logit(-0.25)
    state = model.state_dict()
    fresh = create_model("lcnet_resnet20", num_classes=10)
    fresh.load_state_dict(state)
    assert fresh.blocks[0].gate.threshold.item() == pytest.approx(0.25)
    old = {f"model.{k}": v for k, v in state.items() if not k.endswith("threshold")}
    load_weights(fresh, old, "old.json")  # strict load of a pre-calibration checkpoint
    assert fresh.blocks[0].gate.threshold.item() == 0.0
    with pytest.raises(CheckpointError, match="missing blocks.0.gate.l_fc.bias"):
        load_weights(fresh, {k: v for k, v in old.items() if "0.gate.l_fc.bias" not in k})


def test_lcnet_calibration_lands_on_the_target():
    model = settled("lcnet_resnet20")  # saliences start near 1: ratio near 1
    result = calibrate_gates(model, batches(), 0.6, input_size=16, tol=0.02, progress=False)
    assert result.before > 0.95 and result.offset < 0
    assert result.reached and abs(result.after - 0.6) <= 0.02


def test_drnet_calibration_lands_on_the_target():
    model = settled("drnet_resnet20")
    result = calibrate_gates(model, batches(), 0.6, input_size=16, tol=0.02, progress=False)
    assert result.reached and abs(result.after - 0.6) <= 0.02


@pytest.mark.parametrize("target", [0.35, 0.7])
def test_dmnn_calibration_lands_on_the_target_and_is_folded_into_the_weights(target):
    model = settled("dmnn_resnet20")
    data = batches()
    before, _ = measure(model, data, 16, "macs_ratio", torch.device("cpu"))
    result = calibrate_gates(model, data, target, input_size=16, tol=0.01, progress=False)
    assert result.reached and result.before == pytest.approx(before)
    assert abs(result.after - target) <= 0.01
    assert (result.offset > 0) == (target > before)  # more compute needs a higher on-logit
    again, n = measure(model, data, 16, "macs_ratio", torch.device("cpu"))
    assert again == pytest.approx(result.after) and n == 48  # the shift stays in the model


def test_a_ratio_within_the_slack_keeps_the_trained_thresholds():
    model = settled("dmnn_resnet20")
    data = batches()
    before, _ = measure(model, data, 16, "macs_ratio", torch.device("cpu"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    near = before - 0.008  # off by more than tol, less than the slack
    kept = calibrate_gates(model, data, near, input_size=16, slack=0.01, progress=False)
    assert kept.offset == 0.0 and kept.steps == 1 and kept.reached and kept.slack == 0.01
    assert kept.after == pytest.approx(before)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    moved = calibrate_gates(model, data, near, input_size=16, slack=0.0, tol=0.002,
                            progress=False)  # the same gap with no slack is searched
    assert moved.offset < 0 and moved.steps > 1
    with pytest.raises(ValueError, match="calibration slack"):
        calibrate_gates(model, data, 0.5, input_size=16, slack=-0.1, progress=False)


def test_aig_calibration_targets_the_execution_rate():
    model = settled("aig_resnet20")
    result = calibrate_gates(model, batches(), 0.5, input_size=16, metric="exec_rate",
                             tol=0.03, progress=False)
    assert result.reached and abs(result.after - 0.5) <= 0.03


def test_unreachable_target_keeps_the_closest_end():
    model = settled("dmnn_resnet20")
    # the stem, transitions and classifier always run: a MACs ratio of 0.01 cannot be met
    result = calibrate_gates(model, batches(), 0.01, input_size=16, bound=8.0, progress=False)
    assert not result.reached and result.offset == -8.0 and result.steps == 2
    assert result.after > 0.01


def test_static_models_are_refused():
    assert not can_calibrate(create_model("resnet20", num_classes=10))
    assert can_calibrate(create_model("lcnet_resnet20", num_classes=10))
    assert can_calibrate(create_model("drnet_resnet20", num_classes=10))
    with pytest.raises(ValueError, match="no gates to calibrate"):
        calibrate_gates(create_model("resnet20", num_classes=10), batches(), 0.5, input_size=16)
    with pytest.raises(ValueError, match="metric must be one of"):
        calibrate_gates(settled("dmnn_resnet20"), batches(), 0.5, input_size=16, metric="flops")


def test_config_calibrates_what_the_method_targets():
    pick = {m: (c := resolve_config(None, None, {"model": m})).method.calibration_metric(c)
            for m in ("dmnn_resnet20", "aig_resnet20", "drnet_resnet20", "resnet20",
                      "lcnet_resnet20")}
    assert pick == {"dmnn_resnet20": "macs_ratio", "aig_resnet20": "exec_rate",
                    "drnet_resnet20": "macs_ratio", "resnet20": None,
                    "lcnet_resnet20": "macs_ratio"}
    dyn = resolve_config(None, None, {"macs_scope": "dynamic"})
    assert dyn.method.calibration_metric(dyn) == "macs_ratio_dynamic"
    with pytest.raises(ValueError, match="calibration_samples"):
        resolve_config(None, None, {"calibration_samples": 0})


# ------------------------------------------------------------------------------ the data it sees


def test_plain_subset_is_unaugmented_unshuffled_seeded_and_complete():
    n = 30
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    split = ArraySplit(images, torch.arange(n), [str(i) for i in range(n)])
    from dmnn.data import AugmentConfig

    train = TensorBatchLoader(split, split.labels % 3, mean=(0.0,), std=(1.0,), batch_size=4,
                              shuffle=True, drop_last=True, augment=AugmentConfig(), copies=2)
    sub = train.plain_subset(11, batch_size=5, seed=3)
    got = list(sub)
    labels = torch.cat([b.labels for b in got])
    assert [b.images.shape[0] for b in got] == [5, 5, 1]  # no copies, last batch kept
    assert labels.tolist() == sorted(set(labels.tolist())) and len(labels) == 11
    for b in got:  # unaugmented: pixel value == index everywhere (no crop padding, no flip)
        expect = normalize(images[b.labels], (0.0,), (1.0,))
        torch.testing.assert_close(b.images, expect)
        assert b.categories.tolist() == (b.labels % 3).tolist()
    again = torch.cat([b.labels for b in train.plain_subset(11, 5, seed=3)])
    other = torch.cat([b.labels for b in train.plain_subset(11, 5, seed=4)])
    assert again.tolist() == labels.tolist() and other.tolist() != labels.tolist()
    assert len(list(train)) == 7  # the training loader itself is untouched


def test_imagefolder_plain_subset_uses_the_eval_transform(tmp_path: Path):
    root = make_folder(tmp_path / "d", n_train=3, n_val=2)
    bundle = load_dataset("imagefolder", root, batch_size=2, image_size=16)
    sub = bundle.plain_train_subset(4, batch_size=3)
    first = [b.images for b in sub]
    second = [b.images for b in sub]
    assert sum(x.shape[0] for x in first) == 4
    for a, b in zip(first, second, strict=True):  # eval transform: no random crop or flip
        torch.testing.assert_close(a, b)
    assert first[0].shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="eval transform"):  # never the augmenting default
        bundle.train.plain_subset(4, batch_size=3)


# ------------------------------------------------------------------------------ the engine step

TINY = {
    "dataset": "digits", "model": "dmnn_resnet20", "batch_size": 32, "max_train_samples": 128,
    "max_test_samples": 64, "eval_batch_size": 64, "lr": 0.05, "deterministic": True,
    "epochs": 2, "target_rate": 0.6,
}


def test_training_ends_calibrated_and_keeps_the_trained_weights(tmp_path: Path):
    out = tmp_path / "run"
    cfg = {**TINY, "calibration_max_cost": 1.0}  # any cost: a candidate is kept
    final = train(resolve_config(None, None, cfg), out, progress=False)
    cal = final["calibration"]
    assert cal["metric"] == "macs_ratio" and cal["samples"] == 128 and cal["images"] == "training"
    # without a holdout, a candidate that trains is not judged on the images it trained on
    assert cal["chosen"] in CANDIDATES and set(cal["candidates"]) == set(CANDIDATES) - {*TRAINS}
    assert len(cal["skipped"]) == len(TRAINS) and "--holdout" in cal["skipped"][0]
    kept = cal["candidates"][cal["chosen"]]
    assert kept["cost"] == min(c["cost"] for c in cal["candidates"].values() if c["reached"])
    assert cal["uncalibrated"]["macs_ratio"] == json.loads(
        (out / "metrics.jsonl").read_text().splitlines()[-1])["test_macs_ratio"]
    assert json.loads((out / "metrics.json").read_text()) == final
    # last.* keeps the trained weights; calibrated.* differs in the gates' on-logit biases, and
    # in BN statistics only where the kept candidate re-estimated them
    _, last = read_checkpoint(out / "last.json")
    meta, calibrated = read_checkpoint(out / "calibrated.json")
    differ = sorted(k for k in last if k.startswith("model.")
                    and not torch.equal(last[k], calibrated[k]))
    gates = [k for k in differ if k.endswith("fc_gate.bias")]
    assert gates and all(k.endswith("fc_gate.bias") or (kept["bn"] and "running" in k
                                                           or "num_batches" in k) for k in differ)
    for k in gates:  # each gate's on-logits moved by its own offset, the off-logits not at all
        shift = (calibrated[k] - last[k]).view(-1, 2)
        assert torch.all(shift[:, 0] == 0)
        assert min(abs(shift[0, 1].item() - o) for o in kept["offsets"]) < 1e-3
        torch.testing.assert_close(shift[:, 1], shift[:1, 1].expand_as(shift[:, 1]))
    assert meta["extra"]["metrics"]["macs_ratio"] == final["macs_ratio"]
    # finishing again (--resume on a finished run) starts from last.*: the same calibration
    again = Trainer(resolve_config(None, None, cfg), out, progress=False).run(resume=True)
    assert again["calibration"]["chosen"] == cal["chosen"] and again["top1"] == final["top1"]


def test_the_engine_passes_the_configured_slack(tmp_path: Path):
    final = train(resolve_config(None, None, {**TINY, "calibration_slack": 1.0}),
                  tmp_path / "run", progress=False)
    cal = final["calibration"]
    assert cal["chosen"] == "trained" and cal["candidates"] == {} and "within 1" in cal["reason"]
    assert final["macs_ratio"] == cal["uncalibrated"]["macs_ratio"]


def test_a_miss_keeps_the_trained_gates_and_is_written_to_metrics_json(tmp_path, monkeypatch):
    import dmnn.train.finish as engine
    real = engine.calibrate
    monkeypatch.setattr(engine, "calibrate", lambda *a, **k: real(*a, **k, candidates=()))
    out = tmp_path / "run"
    final = train(resolve_config(None, None, {**TINY, "calibration_slack": 0.0}), out,
                  progress=False)
    cal = json.loads((out / "metrics.json").read_text())["calibration"]
    assert cal["kept_trained"] and cal["reason"] == "no candidate reached the target"
    assert cal["target"] == 0.6 and cal["after"] == cal["before"] != 0.6
    assert final["top1"] == cal["uncalibrated"]["top1"]
    _, last = read_checkpoint(out / "last.json")
    _, calibrated = read_checkpoint(out / "calibrated.json")
    assert all(torch.equal(last[k], calibrated[k]) for k in last if k.startswith("model."))


def test_calibration_chooses_on_the_holdout_and_re_estimates_bn_on_training_images(
        tmp_path, monkeypatch):
    import dmnn.train.finish as engine
    seen = {}
    real = engine.calibrate

    def spy(model, batches, target, **kw):
        seen["chosen_on"], seen["bn"] = list(batches), list(kw["bn_batches"])
        return real(model, batches, target, **kw)

    monkeypatch.setattr(engine, "calibrate", spy)
    trainer = Trainer(resolve_config(None, None, {**TINY, "holdout": 32}), tmp_path / "run",
                      progress=False)
    final = trainer.run()
    assert final["calibration"]["images"] == "held-out"
    assert final["calibration"]["samples"] == 32
    # on held-out images every candidate is tried, the fine-tune too
    assert set(final["calibration"]["candidates"]) == set(CANDIDATES)
    assert final["calibration"]["skipped"] == []
    held = torch.cat([b.images for b in seen["chosen_on"]])
    bn = torch.cat([b.images for b in seen["bn"]])
    assert bn.shape[0] == 96  # 128 limited, 32 held out: BN sees the 96 trained on
    flat_held = {tuple(x.flatten().tolist()) for x in held}
    assert not any(tuple(x.flatten().tolist()) in flat_held for x in bn)


class FakeGate:
    def __init__(self) -> None:
        self.offset = 0.0

    def shift_on_logit(self, delta: float) -> None:
        self.offset += delta


def test_greedy_per_block_offsets_cost_less_than_one_global_offset():
    """Two gates move the ratio alike, but shifting gate 0 costs ten times the loss: the greedy
    shifts gate 1 only, one global δ pays for both."""
    gates = [FakeGate(), FakeGate()]

    def evaluate() -> dict[str, float]:
        a, b = gates[0].offset, gates[1].offset
        loss = 1.0 * abs(a) + 0.1 * abs(b)
        return {"value": 0.4 + 0.05 * (a + b), "top1": 0.9 - loss / 10, "loss": loss}

    offsets = [0.0, 0.0]
    got = greedy_offsets(gates, offsets, evaluate, 0.5, tol=1e-3, step=0.5, bound=8.0,
                         max_evals=100)
    assert got["value"] == pytest.approx(0.5, abs=1e-3)
    assert offsets[0] == 0.0 and offsets[1] == pytest.approx(2.0, abs=0.05)
    for g, o in zip(gates, (1.0, 1.0), strict=True):  # the global δ = 1 for both gates
        g.offset = o
    assert evaluate()["value"] == pytest.approx(0.5)
    assert evaluate()["top1"] < got["top1"] - 0.05  # 0.79 against 0.88


def test_bn_re_estimation_averages_the_given_images():
    model = settled("dmnn_resnet20", num_sub_blocks=2)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs = []
    hook = bn.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    data = batches(seed=3)
    reestimate_bn(model, data, "cpu")
    hook.remove()
    x = torch.cat(inputs)  # the first BN runs for every image: equal batches, one mean
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not bn.training and bn.momentum == 0.1
    # the eval executors (BN folded away) are back once the statistics are in
    assert model.execution == "auto" and all(b.execution == "auto" for b in model.blocks)


def test_the_hard_gate_fine_tune_trains_the_weights_under_test_time_gates_only():
    """DRNet §3.4 as a candidate: the network's weights move and fit the images better, the
    gates' own parameters and the BN statistics do not move, and the decisions are eval's."""
    model = settled("dmnn_resnet20", num_sub_blocks=2)
    data = batches(seed=4)
    gate_params = {n: p.detach().clone() for n, p in model.named_parameters() if ".gate." in n}
    stats = {n: b.detach().clone() for n, b in model.named_buffers() if "running" in n}
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if ".gate." not in n}
    with torch.no_grad():
        before = sum(F.cross_entropy(model(b.images), b.labels).item() for b in data)
    modes = []  # each forward of the fine-tune: eval mode (test-time gates), autograd on
    hook = model.register_forward_pre_hook(
        lambda m, args: modes.append((m.training, torch.is_grad_enabled())))
    steps = finetune_hard(model, data, "cpu", lr=0.05, passes=3)
    hook.remove()
    assert modes == [(False, True)] * steps
    assert steps == 3 * len(data) and not model.training
    with torch.no_grad():
        after = sum(F.cross_entropy(model(b.images), b.labels).item() for b in data)
    assert after < before
    now = dict(model.named_parameters())
    assert gate_params and all(torch.equal(now[n], p) for n, p in gate_params.items())
    bufs = dict(model.named_buffers())
    assert all(torch.equal(bufs[n], b) for n, b in stats.items())
    assert sum(not torch.equal(now[n], p) for n, p in weights.items()) > len(weights) // 2


def test_no_calibrate_leaves_the_gates_alone(tmp_path: Path):
    final = train(resolve_config(None, None, {**TINY, "calibrate_gates": False}),
                  tmp_path / "run", progress=False)
    assert final["calibration"] is None and not (tmp_path / "run" / "calibrated.json").exists()
