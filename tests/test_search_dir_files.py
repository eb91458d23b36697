"""What a search writes and prints, as a user runs it (the installed ``rayprune`` console
script, Ray in-process): the first screen is rayprune's; the directory names nothing of its
place, so a copy resumes elsewhere; a full disk ends the search with one line.

One small real search (two trials, a dense reference) is shared by the tests; each test that
changes a directory works on a copy of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import save_tiny_bert
from search.keyword_task import keyword_data

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent

# Makes every write the driver opens under $RAYPRUNE_TEST_ENOSPC_UNDER fail as a full disk
# does (OSError ENOSPC, with the file name), from the first one on: Python's own ``open`` is
# what rayprune's files go through.  Loaded by the CLI process as ``sitecustomize``; no root,
# no loop device or tmpfs needed.
FULL_DISK = """
import builtins, errno, io, os
_under = os.environ.get("RAYPRUNE_TEST_ENOSPC_UNDER")
_open = io.open
def _full_disk_open(file, mode="r", *args, **kwargs):
    if _under and isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax") \\
            and os.path.abspath(file).startswith(_under):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
    return _open(file, mode, *args, **kwargs)
io.open = builtins.open = _full_disk_open
"""


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI with stdout and stderr in one stream, unbuffered: the order a terminal shows.
    Without RAY_AUTH_MODE, as on a user's machine (the test session sets it for its own Ray)."""
    env = {k: v for k, v in (env or os.environ).items() if k != "RAY_AUTH_MODE"}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([str(BIN / "rayprune"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900, cwd=cwd, env=env)


def write_space(work: Path, *, reference: bool = True) -> Path:
    space = {
        "name": "files", "model": str(save_tiny_bert(work / "tiny")), "data": keyword_data(work / "data"),
        "objective": {"metric": "accuracy"},
        "training": {"steps": 20, "batch_size": 16, "eval_interval": 10, "learning_rate": 3e-3},
        "budget": {"num_samples": 2, "max_concurrent": 2}, "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"}, "search": {"algorithm": "random", "seed": 0},
        "space": {"method": "magnitude", "target_sparsity": {"choice": [0.5, 0.8]},
                  "schedule.start": 0.0, "schedule.end": 0.5},
        "points_to_evaluate": [{"target_sparsity": 0.5}, {"target_sparsity": 0.8}],
        # 20 steps do not teach the keyword task: these tests are about the files a search
        # writes, not about judging it, so the search runs although the reference is at the floor.
        "reference": {"require_above_floor": False} if reference else "none",
    }
    (work / "space.yaml").write_text(yaml.safe_dump(space))
    return work / "space.yaml"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(workdir, search dir, the search's output)."""
    work = tmp_path_factory.mktemp("files")
    write_space(work)
    proc = run_cli("search", "--space", "space.yaml", "--output", "runs", "-v", "1", cwd=work)
    assert proc.returncode == 0, proc.stdout
    return work, work / "runs" / "files", proc.stdout


def test_the_first_screen_is_rayprunes(finished):
    """No ``datasets`` progress bar and no Ray notice before (or inside) rayprune's header."""
    _, _, output = finished
    lines = output.splitlines()
    header_end = next(i for i, line in enumerate(lines) if line.startswith("output "))
    assert lines[0].startswith("space ") and all(not line.startswith("Generating") for line in lines)
    assert "Token authentication is enabled" not in output
    assert header_end < 20


def test_the_directory_stores_paths_relative_to_itself(finished):
    _, search_dir, _ = finished
    where = str(search_dir.resolve())
    tracking = json.loads((search_dir / "tracking.json").read_text())
    assert tracking["reference"]["model"] == "reference"
    for name in ("results.csv", "pareto.csv", "pareto.json"):
        assert where not in (search_dir / name).read_text(), name
    assert json.loads((search_dir / "search.json").read_text())["ray_storage"] == "ray/tune"
    from rayprune.search.results import load_search_dir

    _, rows, _ = load_search_dir(search_dir)
    assert rows and all(Path(r["checkpoint"]).is_dir() and r["checkpoint"].startswith(where) for r in rows)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{search_dir / 'mlflow.db'}")
    reference = client.get_run(tracking["reference_run_id"])
    assert reference.data.params["model"] == "reference"
    parent = client.get_run(tracking["parent_run_id"])
    assert where not in parent.data.tags.get("mlflow.note.content", "")


def test_a_copy_resumes_from_its_new_place(finished, tmp_path):
    """The original moved away: the copy resumes with its own study and runs, re-runs nothing,
    and its parent run ends FINISHED; export reads its own checkpoints."""
    work, search_dir, _ = finished
    original = tmp_path / "original"
    shutil.copytree(search_dir, original / "files")
    copy = tmp_path / "copy"
    shutil.copytree(original / "files", copy / "files")
    shutil.rmtree(original)
    # Ray's pickles in the copy name the fixture's directory, which still exists: the resumed
    # copy must not write into it (its study, its runs).
    before = {name: (search_dir / name).read_bytes() for name in ("optuna.db", "mlflow.db", "tracking_trials.jsonl")}
    result = run_cli("search", "--space", str(work / "space.yaml"), "--output", str(copy), "--resume", "-v", "0",
                     cwd=work)
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in result.stdout
    from mlflow.tracking import MlflowClient

    tracking = json.loads((copy / "files" / "tracking.json").read_text())
    client = MlflowClient(f"sqlite:///{copy / 'files' / 'mlflow.db'}")
    assert client.get_run(tracking["parent_run_id"]).info.status == "FINISHED"
    trials = [r for r in client.search_runs([tracking["experiment_id"]])
              if r.data.tags.get("rayprune.role") == "trial"]
    assert len(trials) == 2
    assert {name: (search_dir / name).read_bytes() for name in before} == before


def test_a_full_disk_ends_the_search_with_one_line(tmp_path):
    """Every write under the output directory fails with ENOSPC (FULL_DISK): the CLI says where
    space ran out and that --resume continues, in one line, without a traceback."""
    work = tmp_path
    write_space(work, reference=False)
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FULL_DISK)
    out = work / "runs"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "RAYPRUNE_TEST_ENOSPC_UNDER": str(out / "files" / "search.json")}
    result = run_cli("search", "--space", "space.yaml", "--output", str(out), "-v", "1", cwd=work, env=env)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stdout.strip().splitlines()[-1] == errors[0]
    assert "no space left" in errors[0] and str(out / "files" / "search.json") in errors[0]
    assert "--resume" in errors[0]
