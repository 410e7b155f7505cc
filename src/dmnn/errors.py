"""Errors the CLI reports as one line (no traceback) with a non-zero exit code."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, an output folder in the way, ...)."""

    exit_code = 1


class TrainingInterrupted(TrainingError):
    """Ctrl-C: a checkpoint was saved; exit like an interrupted shell command."""

    exit_code = 130
