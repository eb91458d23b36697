"""Plain helpers of the data-layer tests: small csv files and the real GLUE folder."""

import csv
from pathlib import Path

import pytest

from helpers import GLUE_DIR, NO_GLUE_REASON

__all__ = ["GLUE_DIR", "needs_glue", "write_csv", "numbered_csv"]

needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=NO_GLUE_REASON)


def write_csv(path: Path, header: list[str], rows: list[list]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def numbered_csv(tmp_path: Path, n: int, name: str = "train.csv") -> str:
    """n rows whose sentence names the row, so subsets can be checked by content."""
    rows = [[f"sentence number {i}", i % 2] for i in range(n)]
    return write_csv(tmp_path / name, ["sentence", "label"], rows)
