"""Errors users see.  Each one names the file or key at fault and says what to do.

The CLI prints ``str(error)`` on one line and exits non-zero; no traceback for these.
"""

from __future__ import annotations


class HmrflowError(Exception):
    """Base class of every error hmrflow reports to a user (printed without traceback)."""


class ConfigError(HmrflowError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class VideoDecodeError(HmrflowError):
    """A video cannot be read.  ``path`` is the file, ``reason`` a one-line explanation."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class BodyModelError(HmrflowError):
    """The body model files are missing or malformed (message says what to put where)."""


class UnsafeFileError(HmrflowError):
    """A user file tried to do something a data file never needs (e.g. a pickle with code)."""


class CheckpointError(HmrflowError):
    """A weights file does not match the model it is loaded into."""
