"""``dmnn train`` and ``dmnn eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..checkpoint import atomic_save_tensors, atomic_write_json, read_checkpoint, with_ext
from .app import app, fail, friendly, print_json


def default_out(model: str, dataset: str, rate: float, seed: int) -> Path:
    """runs/MODEL_DATASET_rRATE_sSEED, with a numeric suffix if taken."""
    base = Path("runs") / f"{model}_{dataset}_r{rate:g}_s{seed}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}_{i}")
    return out


@app.command("train")
@friendly
def train_cmd(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file.")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="digits (default) | cifar | imagenet | cpu-fast")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name.")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="digits | cifar10 | cifar100 | imagefolder")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Dataset folder.")] = None,
    categories: Annotated[str | None, typer.Option(
        "--categories", help="Category map: K (k-means), 'auto', or a JSON file.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    target_rate: Annotated[float | None, typer.Option(
        "--target-rate", help="r: target MACs ratio in (0, 1].")] = None,
    sub_blocks: Annotated[int | None, typer.Option("--sub-blocks", help="N.")] = None,
    prev_state: Annotated[bool | None, typer.Option(
        "--prev-state/--no-prev-state", help="Controller previous-state input (ablation).")] = None,
    category_loss: Annotated[bool | None, typer.Option(
        "--category-loss/--no-category-loss", help="Category supervision (ablation).")] = None,
    macs_scope: Annotated[str | None, typer.Option(
        "--macs-scope", help="network (default) | dynamic: what f_total covers.")] = None,
    path_balance: Annotated[float | None, typer.Option(
        "--path-balance", help="Weight of the per-sub-block rate term (0: the paper's loss).")
    ] = None,
    dual_step: Annotated[float | None, typer.Option(
        "--dual-step", help="Step of the MACs-ratio multiplier (0: the paper's loss).")] = None,
    router_finetune_epochs: Annotated[int | None, typer.Option(
        "--router-finetune-epochs",
        help="DRNet: last epochs trained with hard, frozen routers (default 20 %).")] = None,
    calibrate: Annotated[bool | None, typer.Option(
        "--calibrate/--no-calibrate",
        help="After training, shift the gate thresholds so the eval-mode ratio meets r "
             "(every dynamic method; default on).")] = None,
    calibration_samples: Annotated[int | None, typer.Option(
        "--calibration-samples", help="Training images calibration measures on.")] = None,
    width_mult: Annotated[float | None, typer.Option("--width-mult")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader workers.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | auto")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads.")] = None,
    max_train_samples: Annotated[int | None, typer.Option("--max-train-samples")] = None,
    max_test_samples: Annotated[int | None, typer.Option("--max-test-samples")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    deterministic: Annotated[bool | None, typer.Option("--deterministic")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="Progress bars (default: on a terminal).")] = None,
) -> None:
    """Train a model to a compute target; writes config, metrics, TensorBoard and checkpoints."""
    from ..config import resolve_config
    from ..engine import Trainer, resume_config

    overrides: dict[str, Any] = {
        "model": model, "dataset": dataset, "data_dir": data_dir, "categories": categories,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "target_rate": target_rate,
        "sub_blocks": sub_blocks, "prev_state": prev_state, "category_supervision": category_loss,
        "macs_scope": macs_scope, "path_balance": path_balance, "dual_step": dual_step,
        "width_mult": width_mult, "calibrate_gates": calibrate,
        "router_finetune_epochs": router_finetune_epochs,
        "calibration_samples": calibration_samples,
        "workers": workers, "device": device,
        "threads": threads, "max_train_samples": max_train_samples,
        "max_test_samples": max_test_samples, "seed": seed, "deterministic": deterministic,
    }
    if resume:
        if out is None:
            fail("--resume needs --out pointing at the run to continue")
        allowed = {"epochs", "data_dir", "workers", "device", "threads", "calibrate_gates",
                   "calibration_samples"}
        extra = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
        if extra or config is not None or preset is not None:
            fail(f"--resume takes the saved config; only {', '.join(sorted(allowed))} may change")
        cfg = resume_config(out, overrides)
    else:
        if preset is None and config is None:
            preset = "digits"
        cfg = resolve_config(preset, config, overrides)
        if out is None:
            out = default_out(cfg.model, cfg.dataset, cfg.target_rate, cfg.seed)
    trainer = Trainer(cfg, out, progress=progress)  # loads the data: bad input fails here
    trainer.check_out(resume)
    typer.echo(f"training {cfg.model} on {cfg.dataset} (r={cfg.target_rate}) into {out}", err=True)
    final = trainer.run(resume=resume)
    typer.echo(
        f"done: top1 {final['top1']:.4f}, MACs {final['macs_mean']:.4g} ± {final['macs_std']:.3g}"
        f" (ratio {final['macs_ratio']:.3f}), {final['train_seconds'] / 60:.1f} min; "
        f"{out}/metrics.json"
    )


@app.command("eval")
@friendly
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint .json written by dmnn train.")],
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Dataset folder.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Base path of the per-sample outputs BASE.safetensors and BASE.json "
        "(default: CHECKPOINT.eval, next to the checkpoint).")] = None,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-1/5, per-sample MACs, execution rates; saves per-sample MACs, gates, predictions."""
    from ..evaluate import load_for_eval, run_eval

    meta, tensors = read_checkpoint(checkpoint)
    model, data, cfg = load_for_eval(meta, tensors, data_dir, device, source=str(checkpoint))
    summary, record = run_eval(model, data, cfg, device)
    # suffixes are appended, never swapped: Path.with_suffix turned the default
    # "calibrated.eval" into "calibrated.safetensors" and overwrote the checkpoint being read
    base = out if out is not None else with_ext(checkpoint, ".eval")
    per_sample, summary_path = with_ext(base, ".safetensors"), with_ext(base, ".json")
    ours = {checkpoint.resolve(), (checkpoint.parent / meta["tensors"]).resolve()}
    if per_sample.resolve() in ours or summary_path.resolve() in ours:
        fail(f"--out {base} would overwrite the checkpoint {checkpoint}: pick another path")
    atomic_save_tensors(per_sample, record.tensors())
    summary["per_sample_file"] = str(per_sample)
    atomic_write_json(summary_path, summary)
    if as_json:
        print_json(summary)
        return
    typer.echo(
        f"top1 {summary['top1']:.4f}  top5 {summary['top5']:.4f}  MACs {summary['macs_mean']:.4g}"
        f" ± {summary['macs_std']:.3g}  ratio {summary['macs_ratio']:.3f} "
        f"(dynamic part {summary['macs_ratio_dynamic']:.3f})  params {summary['params']:,}"
    )
    for block, rates in summary["exec_rate_sub_block"].items():
        typer.echo(f"  block {block:>3}: " + " ".join(f"{r:.2f}" for r in rates))
    typer.echo(f"per-sample file: {summary['per_sample_file']}")
