"""Tasks: what differs between model heads, behind one interface, and the name -> class registry.

A task owns everything the trial loop, the search, the tracking and the export must not know about
a head: the Auto model class and its label names, tokenisation, the loss and the distillation loss,
prediction + post-processing and the metrics, the floor a model with no skill scores, and what the
export and its model card say (:class:`~rayprune.tasks.base.Task`).

Built in:

- ``classification``: sentence(-pair) classification and regression (GLUE, the demo task).
- ``extractive_qa``: SQuAD-style span extraction (question + context windows).
- ``token_classification``: named-entity recognition and other word-level tagging.

Adding a task: write ``rayprune/tasks/<name>.py`` with a :class:`Task` subclass and add one line to
``_BUILTIN`` below (imported on first use).  Code outside the package decorates its class with
``@register_task("<name>")`` instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from rayprune.tasks.base import Task

__all__ = ["Task", "register_task", "get_task", "available_tasks", "task_from_info", "DEFAULT_TASK"]

#: The task a data spec gets when it names none (every space file written before tasks existed).
DEFAULT_TASK = "classification"

# name -> "module:ClassName"; imported lazily, so validating a space file loads no task code.
_BUILTIN: dict[str, str] = {
    "classification": "rayprune.tasks.classification:ClassificationTask",
    "extractive_qa": "rayprune.tasks.extractive_qa:ExtractiveQATask",
    "token_classification": "rayprune.tasks.token_classification:TokenClassificationTask",
}
_REGISTERED: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "Task":
        return importlib.import_module("rayprune.tasks.base").Task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator adding a task under ``name`` (for tasks outside this package)."""

    def wrap(cls: type) -> type:
        from rayprune.tasks.base import Task

        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"@register_task({name!r}) needs a Task subclass, got {cls!r}")
        _REGISTERED[name] = cls
        return cls

    return wrap


def available_tasks() -> list[str]:
    """Sorted names of every registered task."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_task(name: str) -> type:
    """The :class:`Task` subclass registered under ``name``; unknown names list the valid ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown task type {name!r}; available: {available_tasks()}")
    module_name, class_name = _BUILTIN[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    _REGISTERED[name] = cls
    return cls


def task_from_info(info: dict) -> "Task":
    """Rebuild the task a search ran from the ``data`` section of its ``search.json``
    (:meth:`Task.to_info`).  Search directories written before tasks existed hold only
    ``num_labels`` / ``is_regression``: they were classification searches."""
    kind = info.get("task_type", DEFAULT_TASK)
    return get_task(kind).from_info(info)
