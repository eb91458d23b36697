"""One search directory, one driver; paths stay where the user put them; a resume trusts only
state its own user wrote.  Tried as a user would, with the CLI, on one finished search."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from faultlib import keyword_space, mlflow_children, rayprune, search_args

pytestmark = pytest.mark.integration

HOLD_LOCK = """
import sys, time
from pathlib import Path
from rayprune.search.lock import SearchDirLock
lock = SearchDirLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def finished(cluster, tiny_dir, tmp_path_factory):
    """A finished two-trial search made with the CLI: (space file, output dir, search dir)."""
    cluster.ensure_workers(1)
    root = tmp_path_factory.mktemp("searchdir")
    space = keyword_space(root / "space.yaml", tiny_dir, name="once", targets=[0.5, 0.8])
    out = root / "runs"
    result = rayprune(*search_args(space, out, cluster.address, data_dir=None), env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return space, out, out / "once"


def hold_lock_in_another_process(search_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(search_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_finished_search_run_again_is_refused_with_both_ways_forward(finished, cluster):
    space, out, search_dir = finished
    before = (search_dir / "results.csv").read_text()
    result = rayprune(*search_args(space, out, cluster.address, data_dir=None), env=cluster.env)
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error:") and "finished search" in error
    assert "--resume" in error and "`name:`" in error and "--output" in error
    assert (search_dir / "results.csv").read_text() == before
    assert len(mlflow_children(search_dir, "once")) == 2  # no trial re-ran


def test_a_second_driver_is_refused_naming_the_pid_and_host(finished, cluster):
    space, out, search_dir = finished
    holder = hold_lock_in_another_process(search_dir)
    try:
        result = rayprune(*search_args(space, out, cluster.address, data_dir=None), "--resume", env=cluster.env)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert f"PID {holder.pid} on host {socket.gethostname()}" in error and "in use" in error


def test_a_stale_lock_of_a_killed_driver_is_taken_over(finished):
    from rayprune.search.lock import SearchDirLock

    _, _, search_dir = finished
    holder = hold_lock_in_another_process(search_dir)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = SearchDirLock(search_dir).acquire()
    try:
        assert lock.taken_over["pid"] == holder.pid
        record = json.loads((search_dir / "driver.lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    finally:
        lock.release()
    again = SearchDirLock(search_dir).acquire()  # released cleanly: nothing to take over
    assert again.taken_over is None
    again.release()


def test_resume_refuses_ray_state_that_others_can_write(finished, cluster):
    space, out, search_dir = finished
    tuner_pkl = search_dir / "ray" / "tune" / "tuner.pkl"
    mode = tuner_pkl.stat().st_mode
    tuner_pkl.chmod(mode | 0o002)
    try:
        result = rayprune(*search_args(space, out, cluster.address, data_dir=None), "--resume", env=cluster.env)
    finally:
        tuner_pkl.chmod(mode)
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "refusing to resume" in error and f"{tuner_pkl} is writable by every user" in error
    assert "unpickles" in error


def test_resume_of_a_finished_search_reruns_nothing(finished, cluster):
    space, out, search_dir = finished
    runs_before = {r.info.run_id for r in mlflow_children(search_dir, "once")}
    result = rayprune(*search_args(space, out, cluster.address, data_dir=None), "--resume", env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r.info.run_id for r in mlflow_children(search_dir, "once")} == runs_before


def test_export_into_a_non_empty_directory_needs_force_and_keeps_the_users_files(finished, tmp_path):
    _, _, search_dir = finished
    out = tmp_path / "exported"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = rayprune("export", str(search_dir), "--out", str(out), env=dict(os.environ))
    assert refused.returncode == 2 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    first = rayprune("export", str(search_dir), "--out", str(out), "--top", "2", "--force", env=dict(os.environ))
    assert first.returncode == 0, first.stderr
    exported = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(exported) == 2
    for name in exported:  # safetensors only: no pickled weights in an export
        files = {p.suffix for p in (out / name).iterdir()}
        assert ".safetensors" in files and not files & {".bin", ".pt", ".pth", ".pkl"}

    # A second export with fewer models replaces the first one's, keeps the user's file.
    second = rayprune("export", str(search_dir), "--out", str(out), "--top", "1", "--force", env=dict(os.environ))
    assert second.returncode == 0, second.stderr
    assert (out / "notes.txt").read_text() == "mine"
    remaining = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(remaining) == 1 and remaining[0] in exported
    info = json.loads((out / remaining[0] / "rayprune.json").read_text())
    assert info["exported_by"] == "rayprune export" and "model.safetensors" in info["files"]

    # A file the user put inside an exported entry outlives a --force export over it.
    (out / remaining[0] / "my-eval.txt").write_text("mine too")
    for _ in range(2):  # and is never listed as the export's own
        again = rayprune("export", str(search_dir), "--out", str(out), "--top", "1", "--force", env=dict(os.environ))
        assert again.returncode == 0, again.stderr
        assert (out / remaining[0] / "my-eval.txt").read_text() == "mine too"
        assert "my-eval.txt" not in json.loads((out / remaining[0] / "rayprune.json").read_text())["files"]


def test_a_node_local_storage_path_on_a_multi_node_cluster_is_refused(tmp_path):
    """The decision on a two-node cluster whose second node is another machine: a local path
    (not a network mount) is refused with what to use; a bucket is accepted."""
    from rayprune.errors import SpecError
    from rayprune.search.storage import check_reachable_by_all_nodes, resolve_storage

    nodes = [{"NodeID": "a", "NodeManagerAddress": "127.0.0.1", "Alive": True},
             {"NodeID": "b", "NodeManagerAddress": "203.0.113.7", "Alive": True}]  # TEST-NET-3
    local = resolve_storage(str(tmp_path / "ray"), tmp_path, "x")
    with pytest.raises(SpecError) as err:
        check_reachable_by_all_nodes(local, nodes, probe=False)
    message = str(err.value)
    assert "203.0.113.7" in message and "s3://" in message and "gs://" in message and "NFS" in message
    assert check_reachable_by_all_nodes(resolve_storage("s3://bucket/runs", tmp_path, "x"), nodes) == "bucket URI"
    assert check_reachable_by_all_nodes(local, nodes[:1]) == "single node"


def test_storage_visible_from_every_node_of_the_real_cluster_is_accepted(cluster, tmp_path):
    """The probe itself on the real two-node cluster: a task pinned to each node sees the file."""
    import ray

    from rayprune.search.storage import _visible_on_every_node, alive_nodes

    cluster.ensure_workers(1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        nodes = alive_nodes()
        assert len(nodes) == 2
        assert _visible_on_every_node(tmp_path / "storage", nodes) == []
    finally:
        ray.shutdown()
