"""Fine-tune, selection and eval data from a :class:`DataSpec`, tokenized once per search.

The package, one concern per module:

- ``spec.py``: :class:`DataSpec` (what to load, validated on construction) and
  :class:`TaskData` (what was loaded).  Imports neither torch nor ``datasets``.
- ``presets.py``: the GLUE task presets (columns, labels, metrics, file names).
- ``sources/``: the data sources (``demo``, ``files``, ``glue_dir``, ``hub``), one file each, the
  name -> loader registry and :func:`load_task`; ``sources/__init__.py`` documents which source
  a spec gets.
- ``labels.py``: label encoding, seeded subsampling and the selection split, shared by every
  source through :func:`finalize_task`.
- ``demo.py``: the generated offline task (:func:`make_demo_task`).
- ``tokenize.py``: :func:`tokenize_task` and the padded arrays trials cut batches from.

GLUE test splits have no labels, so the dev split is the eval split (as every paper reports).
Methods that pick a checkpoint or a teacher (PINS, teacher selection) use the *selection*
split, carved from train after subsampling, so eval numbers stay untouched by any choice.
Nothing here imports torch until a batch is built.

Example::

    from transformers import AutoTokenizer
    from rayprune.data import DataSpec, load_task, tokenize_task

    task = load_task(DataSpec(task="sst2", max_train_samples=2000), data_dir="glue_data")
    tok = AutoTokenizer.from_pretrained("bert-base-uncased")
    data = tokenize_task(task, tok)  # max_seq_length from the spec (128)
    for batch in data.train.batches(32, shuffle=True, seed=0):
        loss = model(**batch).loss
"""

from __future__ import annotations

from rayprune.data.demo import make_demo_task
from rayprune.data.labels import finalize_task
from rayprune.data.presets import DEMO_TASK, GLUE_SPLIT_FILES, GLUE_TASKS, TaskPreset
from rayprune.data.sources import (
    DATA_DIR_ENV,
    DataSource,
    available_sources,
    choose_source,
    get_source,
    load_task,
    register_source,
)
from rayprune.data.sources.glue_dir import find_local_glue_dir, read_glue_tsv
from rayprune.data.spec import FILE_FORMATS, DataSpec, TaskData
from rayprune.data.tokenize import TokenizedSplit, TokenizedTask, tokenize_task

__all__ = [
    "TaskPreset",
    "GLUE_TASKS",
    "GLUE_SPLIT_FILES",
    "DEMO_TASK",
    "DATA_DIR_ENV",
    "FILE_FORMATS",
    "DataSpec",
    "TaskData",
    "DataSource",
    "register_source",
    "get_source",
    "available_sources",
    "choose_source",
    "finalize_task",
    "find_local_glue_dir",
    "read_glue_tsv",
    "load_task",
    "make_demo_task",
    "TokenizedSplit",
    "TokenizedTask",
    "tokenize_task",
]
