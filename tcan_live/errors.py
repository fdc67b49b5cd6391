"""A few exceptions, subclassing builtins, that carry context (path, expected, found)."""

from __future__ import annotations

from pathlib import Path


class TcanError(Exception):
    """Base class for tcan-live errors that have a user-facing one-line message."""


class ReadError(TcanError, ValueError):
    """An input file could not be read: names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedInputError(ReadError):
    """The file is readable but holds something tcan-live does not handle (RGB, unknown format)."""


class ModelError(TcanError, ValueError):
    """A model folder, card or weights file is missing or wrong."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoModelError(ModelError, FileNotFoundError):
    """No model is installed or the requested model id is unknown."""


class ProtocolError(TcanError, ValueError):
    """A wire message does not follow the documented format (or has an unknown version)."""


class ConfigError(TcanError, ValueError):
    """Invalid configuration: names the source (file, environment, flag) and the value."""


class ProcessingError(TcanError, ValueError):
    """The input is readable but cannot be processed as asked (e.g. drift larger than the
    field of view)."""
