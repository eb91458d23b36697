"""The one user-error type, imported by every module that validates user input.

A :class:`SpecError` is a user mistake (a space file, a config, a search directory, a CLI flag):
its message names the file, the key and what is allowed.  The CLI prints it as one ``error:``
line and exits 2, without a traceback.
"""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A user mistake; the message says file, key and what is allowed."""
