"""Every exception dmnn raises on purpose, in one place.

Why one module: the CLI turns these into a single ``error:`` line (no traceback). Bad input is a
``ValueError`` (exit status 2); a run that cannot go on is a :class:`TrainingError` (its
``exit_code``). Messages are one line: the problem, then what to do about it.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data input (missing folder, corrupt file, bad category JSON, ...)."""

    def __init__(self, message: object) -> None:
        text = str(message)
        # a DataLoader worker re-raises ours as "Caught DataError in DataLoader worker …
        # Original Traceback …  DataError: <our message>": keep our message
        if "Original Traceback" in text and "DataError: " in text:
            text = text.rsplit("DataError: ", 1)[1]
        # Collapse whitespace so even wrapped causes (e.g. str(exc) of a parser error) stay on
        # one line when the CLI prints them.
        super().__init__(" ".join(text.split()))


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupt, or for another architecture."""


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, an output folder in the way, ...)."""

    exit_code = 1


class TrainingInterrupted(TrainingError):
    """Ctrl-C: a checkpoint was saved; exit like an interrupted shell command."""

    exit_code = 130
