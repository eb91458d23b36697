"""A search refused for what the user typed (--tracking-uri, --storage) leaves nothing in the
output folder: no ``<name>/driver.lock`` that looks like a started search (issue 26, 2.9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayprune.config import load_spec
from rayprune.errors import SpecError
from rayprune.search.driver import run_search
from rayprune.search.preflight import PreparedSearch

QUICKSTART = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"


@pytest.mark.parametrize("options, needle", [
    ({"tracking_uri": "bogus://x"}, "--tracking-uri bogus://x: unsupported scheme"),
    ({"tracking_uri": "sqlite:////no/such/folder/mlflow.db"}, "does not exist"),
    ({"storage": "javascript://x"}, "allowed: s3://"),
])
def test_a_refused_tracking_uri_or_storage_leaves_no_lock(tmp_path, options, needle):
    # Nothing past the checks is reached: no model, data or settings are needed.
    prepared = PreparedSearch(spec=load_spec(QUICKSTART, check=False), settings=None, data=None,
                              search_dir=tmp_path / "runs" / "quickstart", data_info={})
    with pytest.raises(SpecError, match=needle):
        run_search(prepared, **options)
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in (tmp_path / "runs").rglob("*"))
