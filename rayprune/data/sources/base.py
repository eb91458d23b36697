"""What a data source is, and the helpers the built-in sources share.

A source is a function ``(spec, data_dir) -> TaskData``: it reads the raw columns of a train and
an eval split from wherever it reads them and hands them to
:func:`rayprune.data.labels.finalize_task`, which encodes labels, subsamples and carves the
selection split the same way for every source.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

from rayprune.data.labels import missing_column
from rayprune.data.spec import DataSpec, TaskData

__all__ = ["DataSource", "DATA_DIR_ENV", "resolve_data_dir", "dataset_columns", "class_names"]

# Environment variable naming a folder with GLUE task directories (see sources/glue_dir.py).
DATA_DIR_ENV = "RAYPRUNE_DATA_DIR"


class DataSource(Protocol):
    """Loads the data a :class:`DataSpec` names.

    Called once per search by :func:`rayprune.data.load_task` (in the driver's preflight, before
    any trial starts), so any mistake it raises stops the search at once.

    Args:
        spec: the validated request.
        data_dir: the ``data_dir`` given to ``load_task`` (``None`` when none was given); a
            source that reads from a folder falls back to :func:`resolve_data_dir`.

    Returns:
        The finished :class:`TaskData` (build it with ``finalize_task``).

    Raises:
        ValueError: anything the user must fix (missing files or columns, bad labels), with a
            message naming it.
    """

    def __call__(self, spec: DataSpec, data_dir: str | None) -> TaskData: ...


def resolve_data_dir(data_dir: str | None) -> tuple[str | None, bool]:
    """``(folder, from_env)``: the given ``data_dir``, else ``$RAYPRUNE_DATA_DIR``, else None.

    ``from_env`` says the folder came from the environment, so errors can name the variable.
    An explicit empty ``data_dir`` means "no folder" and does not fall back to the environment.
    """
    if data_dir is not None:
        return (os.fspath(data_dir) or None), False
    env = os.environ.get(DATA_DIR_ENV) or None
    return env, env is not None


def dataset_columns(ds: Any, fields: Sequence[str], where: str) -> dict[str, list]:
    """The named columns of a ``datasets.Dataset`` as ``{column: values}``."""
    missing = [c for c in fields if c not in ds.column_names]
    if missing:
        raise missing_column(missing[0], ds.column_names, where)
    return ds.select_columns(list(fields)).to_dict()


def class_names(ds: Any, label_field: str) -> tuple[str, ...] | None:
    """The class names of a ``datasets.ClassLabel`` label column, else ``None``."""
    feature = ds.features.get(label_field)
    names = getattr(feature, "names", None)
    return tuple(names) if names else None
