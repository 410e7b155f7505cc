"""The ``dmnn`` command line."""

from . import bench_cmd, train_cmd  # noqa: F401  (register commands)
from .app import app, main

__all__ = ["app", "main"]
