"""Pinned checksums of generated and subsampled data.

The benchmarks' numbers depend on exactly which sentences the demo generator writes, which rows
a seeded subsample keeps, which rows the selection split takes and which token ids come out.
These digests were taken from the code before the data layer was split into a package; any
change to them is a change to every benchmark and must be deliberate.
"""

import hashlib
import json
import os

import pytest

from rayprune.data import DATA_DIR_ENV, DataSpec, load_task, make_demo_task, tokenize_task
from helpers import GLUE_DIR, NO_GLUE_REASON


def digest(obj) -> str:
    """Short sha256 of a JSON-serialisable value (examples are dicts of str / int / float)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def test_demo_task_sentences_are_pinned():
    task = make_demo_task(seed=0)
    assert task.train[:3] == PINNED_DEMO_FIRST
    assert digest(task.train) == "9596a6ee6aeef915"
    assert digest(task.selection) == "0b4157b0ac038987"
    assert digest(task.eval) == "7ef228e459976acb"
    small = load_task(DataSpec(task="demo", max_train_samples=300, max_eval_samples=60, seed=2))
    assert digest([small.train, small.selection, small.eval]) == "58255ac08bf9d09b"


def test_seeded_subsample_and_selection_split_are_pinned(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(
        "sentence,label\n" + "".join(f"sentence number {i},{i % 2}\n" for i in range(300)),
        encoding="utf-8",
    )
    task = load_task(DataSpec(train_files=[str(path)], eval_files=[str(path)],
                              text_fields=["sentence"], max_train_samples=100,
                              max_eval_samples=40, selection_fraction=0.2, seed=3))
    numbers = [[int(ex["sentence"].split()[-1]) for ex in split]
               for split in (task.train, task.selection, task.eval)]
    assert numbers[1][:5] == PINNED_SELECTION_FIRST
    assert digest(numbers) == "4a7db70f98309093"


def test_demo_token_ids_are_pinned():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from rayprune.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))
    data = tokenize_task(make_demo_task(n_train=200, n_eval=50, seed=0), tokenizer,
                         max_seq_length=16)
    ids = [data.train.input_ids.tolist(), data.selection.input_ids.tolist(),
           data.eval.input_ids.tolist(), data.train.attention_mask.tolist()]
    assert digest(ids) == "1d1efb537c712b50"


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=NO_GLUE_REASON)
def test_benchmark_sst2_subsample_is_pinned():
    """The subsample benchmarks/common.py trains on (sst2, seed 0), read from the real TSVs."""
    task = load_task(DataSpec(task="sst2", max_train_samples=2000, seed=0), data_dir=str(GLUE_DIR))
    assert digest([task.train, task.selection]) == "60ce1ea4511473b1"
    assert digest(task.eval) == "066d836262839c58"


# Readable anchors next to the digests, so a failure shows what moved.
PINNED_DEMO_FIRST = [
    {"sentence": "the script was really enjoyable , yet the camera work was never truly "
                 "impressive . we watched it at home", "label": 0},
    {"sentence": "the editing is never charming , although the direction was gripping , at "
                 "least for me", "label": 0},
    {"sentence": "the direction is never bland , and the dialogue was not really mediocre",
     "label": 1},
]
PINNED_SELECTION_FIRST = [26, 34, 43, 52, 53]
