"""The ``dmnn`` command line."""

from . import train_cmd  # noqa: F401  (registers train / eval)
from .app import app, main

__all__ = ["app", "main"]
