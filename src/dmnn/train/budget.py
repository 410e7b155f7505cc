"""The run's latency table: where it comes from, and the checks it must pass before anything is
written (``--budget latency``, or ``--latency-table`` with the MACs budget for the report).

Why a copy in the run folder (``latency_table.json``): the table is the price the resource loss
trains against, so a resumed run must use the same one (profiling again would measure other
prices), and ``dmnn eval`` of the run's checkpoints finds it there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..methods.objective import Budget, LatencyBudget, MacsBudget
from ..network.dynamic_net import DynamicNet
from ..network.latency_table import LatencyTable
from .config import TrainConfig

TABLE_FILE = "latency_table.json"
PROFILE_BATCH = 32
"""--latency-batch when the table is profiled at the start and none is given."""


def run_table_path(out: str | Path) -> Path:
    return Path(out) / TABLE_FILE


def resolve_latency(
    cfg: TrainConfig, model: DynamicNet, model_kwargs: dict[str, Any], input_size: int,
    out: Path, *, resume: bool, device: torch.device, distributed: bool,
    say: Any = print,
) -> LatencyTable | None:
    """The run's table: its folder's copy on resume, else ``--latency-table``, else (with
    ``--budget latency``) profiled now on ``device``; None without either. Checked against the
    run's model, input size and ``--latency-batch``, and against the target."""
    loss = cfg.loss
    if loss.budget == "latency":
        check_budget_fits(cfg)
    saved = run_table_path(out)
    if resume and saved.is_file():
        table = LatencyTable.from_file(saved, "the run's latency table")
    elif loss.latency_table is not None:
        table = LatencyTable.from_file(loss.latency_table)
    elif loss.budget == "latency":
        if distributed:
            raise UsageError("--budget latency under torchrun needs --latency-table FILE (each "
                             "process would measure its own prices): profile first with "
                             f"`dmnn profile {cfg.model} --out FILE.json`")
        table = profile_now(cfg, model_kwargs, input_size, device, say)
    else:
        return None
    table.check_for(cfg.model, model, input_size, loss.latency_batch)
    if loss.budget == "latency":
        floor = table.minimum_fraction
        if floor >= 1:
            raise UsageError(
                f"--budget latency: {cfg.model} with every sub-block off takes {floor:.3f} of "
                f"the static backbone's time at batch {table.batch}, {table.input_size} px "
                f"({table.source}), so no --target-rate in (0, 1] is reachable: the gates "
                "cost more than they can save at this size; profile at a larger batch or "
                "image size, or use --budget macs")
        if cfg.target_rate <= floor:
            raise UsageError(
                f"--target-rate {cfg.target_rate:g} is at or below the latency of {cfg.model} "
                f"with every sub-block off, {floor:.3f} of the static backbone's "
                f"({table.source}): raise --target-rate")
    return table


def check_budget_fits(cfg: TrainConfig) -> None:
    if not cfg.method.gated:
        raise UsageError(f"--budget latency trains gates, and {cfg.model} has none: use a gated "
                         "model or --budget macs")


def profile_now(cfg: TrainConfig, model_kwargs: dict[str, Any], input_size: int,
                device: torch.device, say: Any) -> LatencyTable:
    """Profile the run's model on its own device (a fresh model: time does not depend on the
    weights), without touching the run's random stream."""
    from ..evaluation.profile import profile_model

    batch = cfg.loss.latency_batch or PROFILE_BATCH
    say(f"profiling {cfg.model} at batch {batch}, {input_size} px on {device} for the latency "
        "budget (pass --latency-table FILE to reuse a table)")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        data = profile_model(cfg.model, batch=batch, input_size=input_size, device=str(device),
                             threads=cfg.threads, model_kwargs=model_kwargs,
                             channels_last=cfg.channels_last)
    check = data["check"]
    say(f"latency table: static backbone {data['static_ms']:.2f} ms, prediction error median "
        f"{100 * check['median_abs_error']:.1f} %, worst {100 * check['worst_abs_error']:.1f} %")
    return LatencyTable(data, "the latency table profiled at the start")


def budget_of(cfg: TrainConfig, table: LatencyTable | None) -> Budget:
    """What the resource loss measures: the expected latency with ``--budget latency``."""
    if cfg.loss.budget == "latency":
        assert table is not None, "resolve_latency gives a --budget latency run its table"
        return LatencyBudget(table, cfg.loss.latency_gradient)
    return MacsBudget()
