"""The ``dmnn`` command line: one module per command group, added to the app by :func:`build`."""

from . import bench_cmd, eval_cmd, info_cmd, profile_cmd, report_cmd, train_cmd
from .app import app, main


def build() -> None:
    """Add every command to :data:`app` (explicitly, once)."""
    if not app.registered_commands:
        for module in (info_cmd, train_cmd, eval_cmd, bench_cmd, profile_cmd, report_cmd):
            module.register(app)


build()

__all__ = ["app", "build", "main"]
