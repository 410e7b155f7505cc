"""Options are declared once (TrainConfig field metadata): validation, the CLI flags and the
saved config all come from those declarations, and older spellings keep working."""

import pytest
from typer.testing import CliRunner

from dmnn.checks import check_number, check_rate
from dmnn.cli import app
from dmnn.train.config import TrainConfig, options, resolve_config

# every flag `dmnn train` had before its options were generated (commit 2146e19)
OLD_FLAGS = [
    "--config", "--preset", "--model", "--dataset", "--data-dir", "--categories", "--epochs",
    "--batch-size", "--lr", "--target-rate", "--sub-blocks", "--prev-state", "--no-prev-state",
    "--category-loss", "--no-category-loss", "--macs-scope", "--path-balance", "--dual-step",
    "--router-finetune-epochs", "--calibrate", "--no-calibrate", "--calibration-samples",
    "--width-mult", "--workers", "--device", "--threads", "--max-train-samples",
    "--max-test-samples", "--seed", "--deterministic", "--out", "--resume", "--progress",
    "--no-progress",
]


def test_every_old_train_flag_is_still_there():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    words = set(result.stdout.replace("│", " ").split())
    missing = [f for f in OLD_FLAGS if f not in words]
    assert not missing, missing


def test_every_config_field_has_a_flag_or_is_marked_internal():
    names = {o.name for o in options()}
    assert {"target_rate", "path_balance", "lr", "num_sub_blocks"} <= names
    assert all(o.metadata.get("help") for o in options() if o.metadata.get("cli", True))


@pytest.mark.parametrize("values,match", [
    ({"lr": "fast"}, "lr must be float"), ({"target_rate": "0.5"}, "target rate r must be"),
    ({"weight_decay": "lots"}, "weight_decay"), ({"milestones": 5}, "milestones must be list"),
    ({"data_dir": 5}, "data_dir must be"), ({"device": 5}, "device must be str"),
    ({"threads": "1"}, "threads must be int"), ({"categories": [1, 2]}, "categories"),
    ({"lr": float("nan")}, "lr must be a finite number"), ({"threads": 0}, "threads"),
    ({"epochs": True}, "epochs must be int"), ({"milestones": [1.5]}, "list of integers"),
])
def test_wrong_types_are_one_line_value_errors(values, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(None, None, values)


def test_loss_settings_and_method_options_are_nested_but_spelled_flat():
    cfg = resolve_config(None, None, {"path_balance": 0.3, "target-rate": 0.4})
    assert cfg.options.path_balance == 0.3 and cfg.target_rate == cfg.loss.target_rate == 0.4
    flat = cfg.to_dict()
    assert "loss" not in flat and "options" not in flat and flat["path_balance"] == 0.3
    assert TrainConfig.from_dict(flat) == cfg  # config.yaml round trip
    nested = TrainConfig.from_dict({"loss": {"target_rate": 0.3}, "dmnn": {"path_balance": 0.2}})
    assert nested.loss.target_rate == 0.3 and nested.options.path_balance == 0.2


def test_the_old_sub_blocks_key_still_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sub_blocks: 4\n")
    assert resolve_config(None, path).options.num_sub_blocks == 4
    with pytest.raises(ValueError, match="given twice"):
        resolve_config(None, None, {"sub_blocks": 4, "num_sub_blocks": 2})


def test_range_messages_by_hand():
    with pytest.raises(ValueError, match=r"target rate r must be in \(0, 1\], got 0"):
        check_rate(0)
    with pytest.raises(ValueError, match=r"leak must be in \[0, 1\), got 1"):
        check_number("leak", 1, 0.0, 1.0, hi_open=True)
    with pytest.raises(ValueError, match=r"tau must be > 0, got 0"):
        check_number("tau", 0, 0.0, lo_open=True)
    assert check_rate(1.0) == 1.0 and check_number("x", 0, 0.0) == 0
