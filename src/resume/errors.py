"""User-facing errors. The CLI prints them as one line (no traceback) and exits with code 2."""

from __future__ import annotations


class ResumeError(Exception):
    """An error caused by the user's input (config, data, model name), not by a bug."""


class ConfigError(ResumeError):
    """A config file or value is invalid; the message names the key, the value and what is allowed."""


class DataError(ResumeError):
    """A dataset file is malformed; the message names the file, the line and what was expected."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class ModelError(ResumeError):
    """A model name cannot be resolved or loaded."""
