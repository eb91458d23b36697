"""The one user-error type, imported by every module that validates user input.

A :class:`SpecError` is a user mistake (a space file, a config, a search directory, a CLI flag):
its message names the file, the key and what is allowed.  The CLI prints it as one ``error:``
line and exits 2, without a traceback.
"""

from __future__ import annotations

__all__ = ["SpecError"]

# Control characters (a newline in a YAML key, a tab in a value) are shown escaped, so that the
# message stays one line whatever the user wrote.
_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 127: "\\x7f"}


class SpecError(ValueError):
    """A user mistake; the message (always one line) says file, key and what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(str(message).translate(_ESCAPES))
