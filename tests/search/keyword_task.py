"""A task the tiny test BERT learns in about 60 steps, so a search's trials can end clearly above
the floor: filler words plus one keyword that decides the label ("great" 1, "awful" 0).  Written
as csv files for ``data.train_files`` / ``data.eval_files``; no download, no GLUE checkout."""

from __future__ import annotations

import csv
import random
from pathlib import Path

__all__ = ["keyword_data"]

_FILLER = "the a film movie plot actor scene story music it was is and".split()


def _write(path: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label"])
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(_FILLER) for _ in range(6)]
            words.insert(rng.randint(0, 6), "great" if label else "awful")
            writer.writerow([" ".join(words), label])
    return str(path)


def keyword_data(directory: Path, *, train: int = 320, eval: int = 64) -> dict:
    """The space file's ``data:`` section of the keyword task, its files written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return {"train_files": [_write(directory / "train.csv", train, 0)],
            "eval_files": [_write(directory / "eval.csv", eval, 1)],
            "text_fields": ["sentence"], "num_labels": 2, "metrics": ["accuracy"], "max_seq_length": 16}
