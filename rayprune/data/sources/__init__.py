"""Data sources behind one signature, the name -> loader registry, and :func:`load_task`.

Which source loads a :class:`DataSpec` (:func:`choose_source`, first match wins):

1. ``spec.source``, when set: the source registered under that name.
2. ``task="demo"`` -> ``demo``: the generated offline task.
3. ``train_files`` / ``eval_files`` -> ``files``: local csv, tsv, json, jsonl or parquet files
   (with a GLUE ``task`` as well, the preset supplies the columns and metrics).
4. A GLUE ``task`` and a data directory (``data_dir=`` or ``$RAYPRUNE_DATA_DIR``) ->
   ``glue_dir``: the official GLUE TSVs.
5. Otherwise (a GLUE ``task`` without a data directory, or a ``dataset`` name) -> ``hub``:
   the Hugging Face hub through ``datasets.load_dataset``.

Adding a source: write ``rayprune/data/sources/<name>.py`` with a ``load(spec, data_dir)``
function (see :class:`~rayprune.data.sources.base.DataSource`) and add one line to ``_BUILTIN``
below; it is then chosen with ``data: {source: <name>}``.  Code outside the package decorates
its function with ``@register_source("<name>")`` instead.
"""

from __future__ import annotations

import importlib
from typing import Callable

from rayprune.data.presets import DEMO_TASK, GLUE_TASKS
from rayprune.data.sources.base import DATA_DIR_ENV, DataSource, resolve_data_dir
from rayprune.data.spec import DataSpec, TaskData

__all__ = [
    "DataSource",
    "DATA_DIR_ENV",
    "register_source",
    "get_source",
    "available_sources",
    "choose_source",
    "load_task",
]

# name -> "module:function"; imported on first use, so naming a source loads nothing else.
_BUILTIN: dict[str, str] = {
    "demo": "rayprune.data.sources.demo:load",
    "files": "rayprune.data.sources.files:load",
    "glue_dir": "rayprune.data.sources.glue_dir:load",
    "hub": "rayprune.data.sources.hub:load",
}
_REGISTERED: dict[str, DataSource] = {}


def register_source(name: str) -> Callable[[DataSource], DataSource]:
    """Function decorator adding a data source under ``name`` (for sources outside this
    package); a name already taken is replaced, so a project can swap a built-in source."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a source name must be a non-empty string, got {name!r}")

    def wrap(loader: DataSource) -> DataSource:
        if not callable(loader):
            raise TypeError(
                f"@register_source({name!r}) needs a function (spec, data_dir) -> TaskData, "
                f"got {loader!r}"
            )
        _REGISTERED[name] = loader
        return loader

    return wrap


def available_sources() -> list[str]:
    """Sorted names of every registered source."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_source(name: str) -> DataSource:
    """The loader registered under ``name``; unknown names list the valid ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown source {name!r}; available: {available_sources()}")
    module_name, function_name = _BUILTIN[name].split(":")
    loader = getattr(importlib.import_module(module_name), function_name)
    _REGISTERED[name] = loader
    return loader


def choose_source(spec: DataSpec, data_dir: str | None = None) -> str:
    """The name of the source that loads ``spec`` (the rule in this module's docstring)."""
    if spec.source is not None:
        return spec.source
    if spec.task == DEMO_TASK:
        return "demo"
    if spec.train_files is not None:
        return "files"
    if spec.task in GLUE_TASKS and resolve_data_dir(data_dir)[0] is not None:
        return "glue_dir"
    return "hub"


def load_task(spec: DataSpec, *, data_dir: str | None = None) -> TaskData:
    """Load, label-encode, subsample and split the data a :class:`DataSpec` names.

    Called once per search by the driver's preflight; the result is tokenized with
    :func:`rayprune.data.tokenize_task` and shipped to every trial.

    Args:
        spec: what to load; :func:`choose_source` picks the source.
        data_dir: folder with GLUE task directories; default: ``$RAYPRUNE_DATA_DIR``.  Without
            one, GLUE presets load from the Hugging Face hub.

    Raises:
        TypeError: ``spec`` is not a DataSpec, or a source returned something else than a
            TaskData.
        ValueError: missing files or columns, labels that do not fit, metrics that do not apply,
            or a hub dataset that cannot be reached (the message says to pass local data).
    """
    if not isinstance(spec, DataSpec):
        raise TypeError(f"spec must be a DataSpec, got {type(spec).__name__}")
    name = choose_source(spec, data_dir)
    task = get_source(name)(spec, data_dir)
    if not isinstance(task, TaskData):
        raise TypeError(f"source {name!r} returned {type(task).__name__}, not a TaskData")
    return task
