"""The single exception type of the data layer.

Why: the CLI catches one type and prints its message as a one-line diagnosis, so every bad input
(missing folder, corrupt file, bad category JSON...) raises ``DataError`` saying what was wrong and
what to do about it.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data input; the message is a single line: the problem, then the fix."""

    def __init__(self, message: object) -> None:
        # Collapse whitespace so even wrapped causes (e.g. str(exc) of a parser error) stay on
        # one line when the CLI prints them.
        super().__init__(" ".join(str(message).split()))
