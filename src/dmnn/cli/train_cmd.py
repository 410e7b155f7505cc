"""``dmnn train``: its config options are generated from :class:`~dmnn.train.config.TrainConfig`
and from every registered method's options.

Each field's declaration (name, type, help, default, ``resume``) becomes one ``--flag``, so an
option is declared once and the CLI, YAML files and validation cannot drift apart. The flags are
generated each time the command line is built, so a method registered by a plug-in brings its own.
The command's own options (``--config``, ``--preset``, ``--out``, ``--resume``, ``--progress``)
are written out.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from ..checks import union_args
from ..train.config import PRESETS, OptionInfo, options
from .app import fail, friendly


def default_out(model: str, dataset: str, rate: float, seed: int) -> Path:
    """runs/MODEL_DATASET_rRATE_sSEED, with a numeric suffix if taken."""
    base = Path("runs") / f"{model}_{dataset}_r{rate:g}_s{seed}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}_{i}")
    return out


def cli_type(tp: Any) -> Any:
    """The type typer parses an option as: ``X | None`` → X; mixed unions → str."""
    args = tuple(a for a in union_args(tp) if a is not type(None))
    if len(args) == 1:
        return args[0]
    return str  # e.g. categories: K or a file name; the data layer reads either from a string


def flag_of(opt: OptionInfo) -> str:
    flag = opt.metadata.get("flag")
    if flag:
        return flag
    name = opt.name.replace("_", "-")
    return f"--{name}/--no-{name}" if cli_type(opt.type) is bool else f"--{name}"


def _help(opt: OptionInfo) -> str:
    text = opt.metadata.get("help", "").rstrip()
    if opt.default is not None and opt.default != [] and "default" not in text:
        shown = opt.default if not isinstance(opt.default, bool) else str(opt.default).lower()
        text += f" (default: {shown})"  # not [default: …]: rich would read it as markup
    return text + (" May change on --resume." if opt.metadata.get("resume") else "")


def config_options() -> list[OptionInfo]:
    """The flags of today's registry (a method registered since brings its own)."""
    return [opt for opt in options() if opt.metadata.get("cli", True)]


def resumable() -> list[str]:
    return sorted(opt.name for opt in config_options() if opt.metadata.get("resume"))


def _signature() -> inspect.Signature:
    own = [
        ("config", Path | None, typer.Option("--config", help="YAML config file.")),
        ("preset", str | None, typer.Option(
            "--preset", help=f"{' | '.join(PRESETS)} (default: digits).")),
        ("out", Path | None, typer.Option("--out", help="Output folder.")),
        ("resume", bool, typer.Option("--resume", help="Continue the run in --out.")),
        ("progress", bool | None, typer.Option(
            "--progress/--no-progress", help="Progress bars (default: on a terminal).")),
    ]
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                          default=False if name == "resume" else None,
                          annotation=Annotated[tp, info])
        for name, tp, info in own
    ]
    for opt in config_options():
        info = typer.Option(flag_of(opt), help=_help(opt), show_default=False)
        params.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[cli_type(opt.type) | None, info]))
    return inspect.Signature(params)


def train_cmd(
    *, config: Path | None, preset: str | None, out: Path | None, resume: bool,
    progress: bool | None, **values: Any,
) -> None:
    """Train a model to a compute target; writes config, metrics, TensorBoard and checkpoints.

    The defaults shown are the config's own; a preset (digits unless --config or --preset says
    otherwise) overrides some of them, a --config file overrides the preset, flags override all.
    """
    from ..train.config import resolve_config
    from ..train.engine import Trainer, resume_config

    overrides = {k: v for k, v in values.items() if v is not None and v != []}
    if resume:
        if out is None:
            fail("--resume needs --out pointing at the run to continue")
        allowed = resumable()
        extra = sorted(k for k in overrides if k not in allowed)
        if extra or config is not None or preset is not None:
            fail(f"--resume takes the saved config; only {', '.join(allowed)} may change")
        cfg = resume_config(out, overrides)
    else:
        if preset is None and config is None:
            preset = "digits"
        cfg = resolve_config(preset, config, overrides)
        if out is None:
            out = default_out(cfg.model, cfg.dataset, cfg.target_rate, cfg.seed)
    trainer = Trainer(cfg, out, progress=progress)  # loads the data: bad input fails here
    trainer.check(resume)  # the folder and the latency table, before anything is written
    if trainer.main:
        typer.echo(f"training {cfg.model} on {cfg.dataset} (r={cfg.target_rate}) into {out}",
                   err=True)
    final = trainer.run(resume=resume)
    if not trainer.main:
        return
    typer.echo(
        f"done: top1 {final['top1']:.4f}, MACs {final['macs_mean']:.4g} ± {final['macs_std']:.3g}"
        f" (ratio {final['macs_ratio']:.3f}), {final['train_seconds'] / 60:.1f} min; "
        f"{out}/metrics.json"
    )


class TrainCommand:
    """``train_cmd`` as typer sees it: its signature (the flags) is built anew each time typer
    reads it, from the methods registered then."""

    __doc__ = train_cmd.__doc__
    __name__ = "train"

    def __init__(self) -> None:
        self.run = friendly(train_cmd)

    def __call__(self, **kwargs: Any) -> None:
        self.run(**kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return _signature()

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return {p.name: p.annotation for p in _signature().parameters.values()}


def register(app: typer.Typer) -> None:
    app.command("train")(TrainCommand())
