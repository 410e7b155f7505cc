"""The recipe levers and static frontier points of #16: width-scaled CIFAR ResNets, twins with k
of N sub-blocks, the gate-noise start, in-place distillation, warm starts, named recipes, the
gates' own weight decay."""

import json
import math

import pytest
import torch

from dmnn import create_model
from dmnn.errors import CheckpointError
from dmnn.methods.objective import distill_loss, gate_entropy_loss
from dmnn.network.gate import gates_of
from dmnn.network.gumbel import noise_schedule
from dmnn.train.config import RECIPES, resolve_config
from dmnn.train.engine import Trainer, param_groups, train

TINY = {
    "dataset": "digits", "batch_size": 32, "max_train_samples": 96, "max_test_samples": 64,
    "eval_batch_size": 64, "epochs": 1, "deterministic": True, "calibrate_gates": False,
}


def tiny(**kw):
    return resolve_config(None, None, {**TINY, **kw})


def block_macs(model) -> int:
    table = model.macs_table((32, 32))
    return sum(sum(row) for row in table.paths)


def test_width_mult_scales_every_cifar_width():
    model = create_model("resnet20", width_mult=0.5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 8  # the stem
    assert sorted({c.out_channels for c in convs}) == [8, 16, 32]
    assert model.head[-1].in_features == 32
    full = create_model("resnet20").macs_table((32, 32)).full
    half = model.macs_table((32, 32)).full
    assert 0.24 < half / full < 0.27  # MACs scale about as width²
    assert "width_mult" not in create_model("resnet20").arch  # old checkpoints still match


def test_twin_keeps_k_of_n_sub_blocks_at_k_over_n_of_the_blocks_macs():
    full = create_model("twin_resnet20", num_sub_blocks=4)
    kept = create_model("twin_resnet20", num_sub_blocks=4, keep_sub_blocks=1)
    assert [b.num_sub_blocks for b in kept.blocks] == [1] * 9
    assert kept.blocks[0].paths[0][0].out_channels == 4  # the width of one of 4 sub-blocks
    assert block_macs(kept) * 4 == block_macs(full)
    assert kept.arch["keep_sub_blocks"] == 1
    out = kept(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_twin_refuses_more_kept_than_built():
    with pytest.raises(ValueError, match="keep_sub_blocks"):
        create_model("twin_resnet20", num_sub_blocks=2, keep_sub_blocks=3)
    with pytest.raises(ValueError, match="keep_sub_blocks"):
        tiny(model="twin_resnet20", num_sub_blocks=2, keep_sub_blocks=3)
    with pytest.raises(ValueError, match=r"keep_sub_blocks is an option of twin_\* models"):
        tiny(model="dmnn_resnet20", keep_sub_blocks=1)


def test_noise_schedule_from_a_start_scale():
    # start 0.5 until half-way, then linear to 0: epoch 3 of 5 is at progress 0.75
    assert noise_schedule(1, 5, 0.5, 0.0, start=0.5) == 0.5
    assert noise_schedule(3, 5, 0.5, 0.0, start=0.5) == pytest.approx(0.25)
    assert noise_schedule(4, 5, 0.5, 0.0, start=0.5) == pytest.approx(0.0)
    # noise-free straight-through: 0 throughout
    assert [noise_schedule(e, 6, 0.0, 0.0, start=0.0) for e in range(6)] == [0.0] * 6


def test_distill_loss_hand_computed():
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4·ln(3/2) + 1/4·ln(1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = distill_loss(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # T = 2: p_t = softmax(ln3/2, 0) = (√3, 1)/(√3 + 1), times T² = 4
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5))
    assert distill_loss(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)
    loss.backward()
    assert teacher.grad is None  # the teacher is not pulled toward the student
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_distill_trains_the_all_on_teacher_in_the_same_step(tmp_path):
    train(tiny(model="dmnn_resnet20", distill=1.0), tmp_path / "run", progress=False)
    line = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"train_loss_teacher_cls"' in line and '"train_loss_distill"' in line
    with pytest.raises(ValueError, match="--distill needs a gated model"):
        tiny(model="resnet20", distill=1.0)


def test_warm_start_copies_a_twin_into_dmnn_and_leaves_the_gates(tmp_path):
    train(tiny(model="twin_resnet20", num_sub_blocks=2), tmp_path / "twin", progress=False)
    fresh = Trainer(tiny(model="dmnn_resnet20", seed=3), tmp_path / "a", progress=False).model
    warm = Trainer(tiny(model="dmnn_resnet20", seed=3, init_from=str(tmp_path / "twin")),
                   tmp_path / "b", progress=False).model
    twin = Trainer(tiny(model="twin_resnet20", init_from=str(tmp_path / "twin")),
                   tmp_path / "c", progress=False).model
    w, t, f = warm.state_dict(), twin.state_dict(), fresh.state_dict()
    paths = [k for k in t if ".paths." in k]
    assert paths and all(torch.equal(w[k], t[k]) for k in paths)
    assert not all(torch.equal(w[k], f[k]) for k in paths)  # not the fresh init
    gates = [k for k in w if ".gate." in k]
    assert gates and all(torch.equal(w[k], f[k]) for k in gates)  # gates keep their init


def test_warm_start_refuses_weights_that_do_not_fit(tmp_path):
    train(tiny(model="resnet20"), tmp_path / "static", progress=False)
    with pytest.raises(CheckpointError, match="--init-from .*sub-blocks"):
        Trainer(tiny(model="dmnn_resnet20", init_from=str(tmp_path / "static")), tmp_path / "d")
    with pytest.raises(CheckpointError, match="--init-from .*no checkpoint"):
        Trainer(tiny(model="dmnn_resnet20", init_from=str(tmp_path / "none")), tmp_path / "e")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_recipes_sit_between_preset_and_flags():
    paper = resolve_config("cpu-fast", None, {"recipe": "paper"})
    assert (paper.options.path_balance, paper.options.dual_step, paper.loss.distill) == (0, 0, 0)
    assert paper.recipe == "paper"
    flagged = resolve_config("cpu-fast", None, {"recipe": "distill", "dual_step": 0.3})
    assert flagged.loss.distill == RECIPES["distill"]["distill"]
    assert flagged.options.dual_step == 0.3
    # a recipe's DMNN guards do not reach another method's model; its shared levers do
    entropy = resolve_config("cpu-fast", None, {"recipe": "entropy", "model": "aig_resnet20"})
    assert entropy.loss.gate_entropy == 2.0 and "path_balance" not in entropy.to_dict()
    decided = resolve_config("cpu-fast", None, {"recipe": "paper-entropy"})
    assert (decided.loss.gate_entropy, decided.options.path_balance,
            decided.options.dual_step) == (2.0, 0, 0)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        resolve_config("cpu-fast", None, {"recipe": "nope"})


def test_gate_entropy_hand_computed():
    # block 0: p = 1/2 everywhere → ln 2; block 1: p = (0.9, 0.1) → H(0.9) both; block 2 static
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    probs = [torch.full((2, 2), 0.5), torch.tensor([[0.9, 0.1]]), None]
    assert gate_entropy_loss(probs).item() == pytest.approx((math.log(2) + h09) / 2, rel=1e-5)
    assert gate_entropy_loss([None]).item() == 0.0


def test_gate_entropy_is_logged_and_refused_without_gates(tmp_path):
    train(tiny(model="aig_resnet20", gate_entropy=0.1), tmp_path / "run", progress=False)
    line = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"train_loss_gate_entropy"' in line
    with pytest.raises(ValueError, match="--gate-entropy needs a gated model"):
        tiny(model="twin_resnet20", gate_entropy=0.1)


def test_gate_weight_decay_puts_the_gates_in_their_own_group():
    model = create_model("dmnn_resnet20", num_sub_blocks=2)
    gate_params = {id(p) for g in gates_of(model) for p in g.parameters()}
    assert param_groups(model, None) == [{"params": list(model.parameters())}]
    net, gates = param_groups(model, 0.0)
    assert {id(p) for p in gates["params"]} == gate_params and gates["weight_decay"] == 0.0
    assert not gate_params & {id(p) for p in net["params"]} and "weight_decay" not in net
    assert len(net["params"]) + len(gates["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="--gate-weight-decay needs a gated model"):
        tiny(model="twin_resnet20", gate_weight_decay=0.0)


def test_entropy_ramp_hand_computed():
    from dmnn.methods.objective import ramp
    assert ramp(2.0, 0, 10) == 0.0
    assert ramp(2.0, 5, 10) == pytest.approx(1.0)
    assert ramp(2.0, 25, 10) == 2.0  # full after the warm-up
    assert ramp(2.0, 0, 0) == 2.0  # no warm-up: full from the first step


def test_entropy_warmup_starts_from_the_guards_alone(tmp_path):
    """One step inside a one-epoch warm-up: weight 0, so the logged total is the guarded run's."""
    one = {"model": "dmnn_resnet20", "max_train_samples": 32, "seed": 3}
    runs = {"guards": tiny(**one), "ramped": tiny(**one, gate_entropy=50.0, gate_entropy_warmup=1),
            "full": tiny(**one, gate_entropy=50.0)}
    totals = {}
    for name, cfg in runs.items():
        train(cfg, tmp_path / name, progress=False)
        line = (tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1]
        totals[name] = json.loads(line)["train_loss"]
    assert totals["ramped"] == pytest.approx(totals["guards"], rel=1e-6)
    assert totals["full"] > totals["guards"] + 1.0  # 50 × H, H > 0.02 for undecided gates


def test_entropy_warmup_refuses_what_it_cannot_ramp():
    with pytest.raises(ValueError, match="--gate-entropy-warmup ramps --gate-entropy"):
        tiny(model="dmnn_resnet20", gate_entropy_warmup=1)
    with pytest.raises(ValueError, match="longer than --epochs"):
        tiny(model="dmnn_resnet20", gate_entropy=1.0, gate_entropy_warmup=3)
