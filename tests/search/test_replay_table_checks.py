"""A replay table is checked once, up front (issue 26 §2.5): a table that lacks its metric
column (the dry run passed, then every trial died), its ``config`` or ``method`` column, or whose
metadata or a row's config is not the JSON rayprune writes, is one ``error:`` line naming the
file and what is wrong; ``--replay DIR`` says it is a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rayprune.cli import main
from rayprune.search.replay import read_curve_table, write_curve_table
from search.test_replay import _meta, _space, _synthetic_rows

META_KEY = b"rayprune.curves"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_curve_table(_synthetic_rows(), tmp_path_factory.mktemp("curves") / "good.parquet", _meta())


def _without_meta_key(key: str) -> bytes:
    return json.dumps({k: v for k, v in _meta().items() if k != key}).encode()


DAMAGES = {
    # name: (how the table is changed, what the error line says)
    "no metric column": (lambda t: t.drop(["accuracy"]), "lacks the column(s) ['accuracy']"),
    "no config column": (lambda t: t.drop(["config"]), "lacks the column(s) ['config']"),
    "no method column": (lambda t: t.drop(["method"]), "lacks the column(s) ['method']"),
    "metadata not JSON": (lambda t: t.replace_schema_metadata({META_KEY: b"{not json"}),
                          "curve metadata (rayprune.curves): not valid JSON"),
    "metadata a list": (lambda t: t.replace_schema_metadata({META_KEY: b"[1, 2]"}),
                        "curve metadata (rayprune.curves): expected a JSON object, got list"),
    "metadata without settings": (lambda t: t.replace_schema_metadata({META_KEY: _without_meta_key("settings")}),
                                  "missing ['settings']"),
    "floor not a number": (lambda t: t.replace_schema_metadata(
        {META_KEY: json.dumps({**_meta(), "floor": "half"}).encode()}), "floor: expected a finite number"),
    "a row's config not JSON": (lambda t: t.set_column(t.column_names.index("config"), "config",
                                                       [["{" + "x"] * t.num_rows]),
                                "column 'config' of config_id 0 report 1: expected a JSON object"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_table_is_one_error_in_the_dry_run(good, tmp_path, capsys, damage):
    change, expected = DAMAGES[damage]
    table = tmp_path / "damaged.parquet"
    pq.write_table(change(pq.read_table(good)), table)
    space = _space(tmp_path, "checked")
    code = main(["search", "--space", str(space), "--replay", str(table), "--output", str(tmp_path / "runs"),
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: {table}: "), err
    assert expected in err


def test_a_directory_is_not_reported_as_missing(good, capsys, tmp_path):
    space = _space(tmp_path, "checked")
    code = main(["search", "--space", str(space), "--replay", str(good.parent), "--output", str(tmp_path / "runs"),
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {good.parent}: a directory, not a replay table") and "good.parquet" in err
    assert "not found" not in err


def test_the_recorded_tables_pass_the_checks():
    recorded = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "curves").glob("*.parquet"))
    assert recorded, "benchmarks/curves holds the recorded tables"
    for path in recorded:
        table = read_curve_table(path)
        assert table.curves and table.steps > 0
