"""Proof of the method interface: a gating method defined entirely in this file is registered,
then trained, evaluated, calibrated and benchmarked through the public entry points (the
``dmnn`` CLI), with no line of the engine, config, evaluator or CLI knowing it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from typer.testing import CliRunner

import dmnn
from dmnn.checks import option
from dmnn.cli import app
from dmnn.methods.base import EpochSetup, Loss, LossOutput, Method, MethodOptions
from dmnn.network.gumbel import on_gates
from dmnn.network.routing import execution_rates
from dmnn.registry import unregister_method

runner = CliRunner()


class CoinGate(dmnn.Gate):
    """GAP → one FC to N [off, on] logit pairs; Gumbel straight-through in training."""

    calibratable = True

    def __init__(self, in_channels: int, num_sub_blocks: int, bias: float = 2.0) -> None:
        super().__init__()
        self.n = num_sub_blocks
        self.fc = nn.Linear(in_channels, 2 * num_sub_blocks)
        with torch.no_grad():
            self.fc.bias.view(-1, 2)[:, 1] = bias  # positive: start mostly on

    def forward(self, x: Tensor, state: Tensor | None = None) -> dmnn.GateDecision:
        logits = self.fc(x.mean(dim=(2, 3))).view(-1, self.n, 2)
        gates = on_gates(logits, self.training, 1.0, self.noise_scale)
        return dmnn.GateDecision(gates=gates, extras={"logits": logits})

    @torch.no_grad()
    def shift_on_logit(self, delta: float) -> None:
        self.fc.bias.view(-1, 2)[:, 1] += delta

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        return in_shape[0] * 2 * self.n


@dataclass(frozen=True)
class CoinOptions(MethodOptions):
    num_sub_blocks: int = option(2, min=1, flag="--sub-blocks")  # shared with DMNN's flag
    coin_bias: float = option(2.0, help="Coin: initial on-logit of every gate.")
    coin_weight: float = option(1.0, min=0.0, model=False, help="Coin: weight of the rate term.")

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int):
        return CoinGate(in_channels, num_sub_blocks, self.coin_bias)


class CoinLoss(Loss):
    """CE + (mean execution rate − r)², and a counter to prove the state is checkpointed."""

    def __init__(self, target: float, weight: float = 1.0) -> None:
        self.target, self.weight, self.steps = target, weight, 0

    def terms(self, logits, routing, labels, categories=None) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        rate = ((execution_rates(routing.gates).mean() - self.target) ** 2)
        if logits.requires_grad:
            self.steps += 1
        total = cls + self.weight * rate
        return LossOutput(total, {"cls": cls.detach(), "rate": rate.detach(),
                                  "total": total.detach()})

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


class Coin(Method):
    name = "coin"
    options = CoinOptions
    doc = "Coin-gate variant (test method)"

    def applies_to(self, backbone: str) -> bool:
        return backbone.startswith("resnet2")  # resnet20 only

    def build_loss(self, cfg, total_steps):
        return CoinLoss(cfg.target_rate, cfg.options.coin_weight)

    def calibration_metric(self, cfg):
        return "exec_rate"

    def epoch_setup(self, model, cfg, epoch):
        return EpochSetup(record={"coin_epoch": epoch})

    def report(self, model, record):
        return {"coin_blocks": sum(g is not None for g in record.gates)}


@pytest.fixture
def coin():
    dmnn.register_method(Coin())
    yield
    unregister_method("coin")


TINY = ["--dataset", "digits", "--batch-size", "32", "--max-train-samples", "128",
        "--max-test-samples", "64", "--eval-batch-size", "64", "--calibration-samples", "64",
        "--no-progress"]


def test_a_method_defined_here_trains_evaluates_calibrates_and_benches(coin, tmp_path):
    assert dmnn.list_models("coin") == ["coin_resnet20"]
    model = dmnn.create_model("coin_resnet20", num_sub_blocks=4)
    assert all(b.num_sub_blocks == 4 and isinstance(b.gate, CoinGate) for b in model.blocks)

    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--model", "coin_resnet20", "--epochs", "2",
                                 "--target-rate", "0.5", "--coin-bias", "3", "--coin-weight",
                                 "0.5", "--gate-entropy", "0.1", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "last.json").read_text())
    # its options are flags: the model option reached the gate, the training one the config
    assert meta["model_kwargs"]["coin_bias"] == 3.0 and "coin_weight" not in meta["model_kwargs"]
    assert yaml.safe_load((out / "config.yaml").read_text())["coin_weight"] == 0.5
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["coin_epoch"] for ln in lines] == [0, 1]  # the method's epoch hook ran
    assert "train_loss_rate" in lines[0]  # its loss parts are logged
    assert "train_loss_gate_entropy" in lines[0]  # the shared levers compose with its loss
    final = json.loads((out / "metrics.json").read_text())
    assert final["calibration"]["metric"] == "exec_rate"  # calibrated with its own metric
    assert final["coin_blocks"] == 9  # its report hook reached metrics.json
    meta = json.loads((out / "last.json").read_text())
    assert meta["extra"]["loss_state"]["steps"] == 2 * 4  # its loss state is checkpointed

    result = runner.invoke(app, ["eval", str(out / "calibrated.json"), "--out",
                                 str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert ev["top1"] == pytest.approx(final["top1"]) and ev["coin_blocks"] == 9
    assert ev["macs_ratio"] == pytest.approx(final["macs_ratio"])

    result = runner.invoke(app, ["bench", "coin_resnet20", "--batch", "2", "--repeats", "2",
                                 "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    bench = json.loads(result.stdout)
    assert bench["max_abs_diff_sparse_vs_masked"] < 1e-4 and bench["macs_ratio"] < 1.0
    result = runner.invoke(app, ["bench", "--checkpoint", str(out / "calibrated.json"),
                                 "--batch", "2", "--repeats", "2", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "coin"


def test_an_option_of_another_method_names_its_owner(coin, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--model", "dmnn_resnet20", "--coin-bias", "1",
                                 "--out", str(out), *TINY])
    assert result.exit_code == 2 and not out.exists()
    assert "error: coin_bias is an option of coin_* models, not of dmnn_resnet20" in result.output
    result = runner.invoke(app, ["train", "--model", "coin_resnet20", "--hidden-dim", "8",
                                 "--out", str(out), *TINY])
    assert result.exit_code == 2 and "hidden_dim is an option of dmnn_* models" in result.output


def test_unregistering_removes_its_models(coin):
    assert "coin_resnet20" in dmnn.list_models()
    unregister_method("coin")
    assert "coin_resnet20" not in dmnn.list_models()
    dmnn.register_method(Coin())  # the fixture unregisters it again


def test_a_gate_that_is_not_a_gate_is_refused():
    with pytest.raises(TypeError, match="subclass dmnn.Gate"):
        dmnn.GatedBlock([nn.Sequential(nn.Conv2d(1, 1, 1))], nn.Identity(), nn.Linear(1, 1))
