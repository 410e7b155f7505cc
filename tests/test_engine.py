"""Training engine on tiny data: MACs ratio moves toward r, exact resume, NaN and Ctrl-C."""

import json

import pytest
import torch

from dmnn.errors import TrainingError
from dmnn.methods.base import LossOutput
from dmnn.train.checkpoint import read_checkpoint
from dmnn.train.config import resolve_config
from dmnn.train.engine import Trainer, resume_config, train

TINY = {
    "dataset": "digits", "model": "dmnn_resnet20", "batch_size": 32, "max_train_samples": 128,
    "max_test_samples": 64, "eval_batch_size": 64, "lr": 0.05, "deterministic": True,
}


def tiny(**kw):
    return resolve_config(None, None, {**TINY, **kw})


def lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_macs_ratio_moves_toward_the_target(tmp_path):
    final = train(tiny(epochs=4, target_rate=0.3, lr=0.1), tmp_path / "run", progress=False)
    ratios = [m["train_macs_ratio"] for m in lines(tmp_path / "run" / "metrics.jsonl")]
    assert ratios[0] > 0.6  # gates start mostly on
    assert abs(ratios[-1] - 0.3) < abs(ratios[0] - 0.3) / 2
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("top1", "macs_mean", "macs_std", "macs_ratio", "params", "epochs",
                "train_seconds"):
        assert key in saved, key
    assert saved["epochs"] == 4 and saved == final
    assert list((tmp_path / "run" / "tb").iterdir()), "TensorBoard event file"


class Interrupt:
    """Wraps the loss; raises KeyboardInterrupt (or returns NaN) at call number ``at``."""

    def __init__(self, loss, at, nan=False):
        self.loss, self.at, self.nan, self.calls = loss, at, nan, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            if self.nan:
                return LossOutput(total=torch.tensor(float("nan"), requires_grad=True))
            raise KeyboardInterrupt
        return self.loss(*args, **kwargs)

    def state_dict(self):
        return self.loss.state_dict()


def test_resume_is_exact(tmp_path):
    straight = Trainer(tiny(epochs=2), tmp_path / "a", progress=False)
    straight.run()
    steps = straight.steps_per_epoch
    cut = Trainer(tiny(epochs=2), tmp_path / "b", progress=False)
    cut.loss = Interrupt(cut.loss, at=steps + 1)  # first step of epoch 2
    with pytest.raises(TrainingError, match="interrupted"):
        cut.run()
    assert (tmp_path / "b" / "interrupted.json").is_file()
    assert read_checkpoint(tmp_path / "b" / "last.json")[0]["epoch"] == 1
    resumed = Trainer(resume_config(tmp_path / "b"), tmp_path / "b", progress=False)
    resumed.run(resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["epoch"] for m in lines(tmp_path / "b" / "metrics.jsonl")] == [1, 2]


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny(epochs=3), tmp_path / "run", progress=False)
    trainer.loss = Interrupt(trainer.loss, at=trainer.steps_per_epoch + 2, nan=True)
    with pytest.raises(TrainingError, match=r"nan at epoch 2, step 6; the last good checkpoint"):
        trainer.run()
    meta, _ = read_checkpoint(tmp_path / "run" / "last.json")
    assert meta["epoch"] == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_existing_run_is_not_overwritten(tmp_path):
    train(tiny(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        Trainer(tiny(epochs=1), tmp_path / "run", progress=False).run()


def test_resume_refuses_another_architecture(tmp_path):
    train(tiny(epochs=1), tmp_path / "run", progress=False)
    other = Trainer(tiny(epochs=2, sub_blocks=4), tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="was trained as"):
        other.run(resume=True)


def test_static_backbone_trains_through_the_same_engine(tmp_path):
    final = train(tiny(epochs=1, model="resnet20"), tmp_path / "run", progress=False)
    assert final["macs_ratio"] == 1.0 and final["macs_std"] == 0.0


@pytest.mark.parametrize("kwargs,match", [
    ({"target_rate": 0.0}, "target rate"), ({"target_rate": 1.5}, "target rate"),
    ({"model": "nope"}, "unknown model"), ({"epochs": 0}, "epochs"),
    ({"schedule": "multistep"}, "milestones"), ({"bogus": 1}, "unknown config option"),
    ({"gate_warmup_epochs": 2, "epochs": 2}, "gate_warmup_epochs must be in"),
    ({"gate_warmup_epochs": 1, "model": "aig_resnet20"},
     "gate_warmup_epochs is an option of dmnn_\\* models"),
])
def test_inconsistent_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_yaml_config_with_cli_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: cpu-fast\nepochs: 3\ntarget-rate: 0.7\n")
    cfg = resolve_config(None, path, {"epochs": 5})
    assert (cfg.dataset, cfg.epochs, cfg.target_rate, cfg.preset) == ("cifar10", 5, 0.7, "cpu-fast")
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        resolve_config(None, path)


def test_gate_warmup_trains_every_sub_block_first_and_holds_the_multiplier(tmp_path):
    # constant Gumbel noise: with the default annealing the last epoch is noise-free, and gates
    # that start on (bias 2) would stay on for a reason that has nothing to do with warm-up
    cfg = tiny(epochs=3, gate_warmup_epochs=2, target_rate=0.3, dual_step=0.5,
               noise_anneal_from=1.0)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    final = trainer.run()
    m = lines(tmp_path / "run" / "metrics.jsonl")
    assert [round(e["train_macs_ratio"], 6) for e in m[:2]] == [1.0, 1.0]  # forced on
    assert m[2]["train_macs_ratio"] < 1.0  # the gates choose from epoch 3
    assert m[1]["train_loss_dual"] == 0.0  # λ does not integrate a gap the gates cannot close
    assert trainer.loss.dual != 0.0 and final["epochs"] == 3


def test_checkpoint_names_with_dots_keep_every_dot(tmp_path):
    from dmnn import create_model
    from dmnn.train.checkpoint import load_weights, save_checkpoint

    model = create_model("dmnn_resnet20", num_classes=10)
    json_path = save_checkpoint(tmp_path / "run.r0.5", model, model_name="dmnn_resnet20",
                                model_kwargs={}, epoch=3)
    tensor_file = json.loads(json_path.read_text())["tensors"]
    assert json_path.name == "run.r0.5.json" and tensor_file.startswith("run.r0.5.")
    assert (tmp_path / tensor_file).is_file() and len(list(tmp_path.iterdir())) == 2
    for given in ("run.r0.5", "run.r0.5.json", "run.r0.5.safetensors"):
        meta, tensors = read_checkpoint(tmp_path / given)
        assert meta["epoch"] == 3 and meta["tensors"] == tensor_file
    load_weights(create_model("dmnn_resnet20", num_classes=10), tensors)
    assert not (tmp_path / "run.r0.json").exists()
