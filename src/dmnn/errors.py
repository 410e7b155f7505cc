"""Every exception dmnn raises on purpose, in one place.

Why one module: the CLI tells them apart by type, never by message text. A :class:`DmnnError`
is a problem the user can fix; the CLI prints its one-line message (the problem, then what to do
about it) as ``error: …`` and exits with its ``exit_code``: 2 for bad input (a
:class:`UsageError`, raised before anything is written), 1 for a run that cannot go on (a
:class:`TrainingError`), 130 for Ctrl-C. Anything else is a bug, and the CLI shows its
traceback. The input errors are ``ValueError`` subclasses, so library callers that catch
``ValueError`` keep working.
"""

from __future__ import annotations


class DmnnError(Exception):
    """An error dmnn raises on purpose, with a message fit for one ``error:`` line."""

    exit_code = 2

    def __init__(self, message: object = "") -> None:
        # collapse whitespace so even wrapped causes (e.g. str() of a parser error) stay on one
        # line when the CLI prints them
        super().__init__(" ".join(str(message).split()))


class UsageError(DmnnError, ValueError):
    """Bad input: an option, an argument, a model keyword, a config file."""


class ModelArgumentError(UsageError):
    """A keyword argument a model does not take (``create_model``)."""


class DataError(UsageError):
    """Bad data input (missing folder, corrupt file, bad category JSON, ...)."""


class CategoryError(DataError):
    """A category grouping that does not fit the data (a method that trains without categories
    can drop the default grouping instead: :func:`dmnn.train.data.load_run_data`)."""


class CheckpointError(UsageError):
    """A checkpoint that is missing, incomplete, corrupt, or for another architecture."""


class TrainingError(DmnnError, RuntimeError):
    """A run that cannot go on (non-finite loss, an output folder in the way, ...)."""

    exit_code = 1


class TrainingInterrupted(TrainingError):
    """Ctrl-C: a checkpoint was saved; exit like an interrupted shell command."""

    exit_code = 130
