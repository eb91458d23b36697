"""Helpers for the fault tests (fixtures in conftest.py): a real multi-node Ray cluster on this
machine and small searches on the tiny model.

Each node is its own ``ray start --block`` process tree in its own session (process group),
started with one CPU and the cluster's auth token, so a test can kill one node's raylet by PID
and the fixture can stop exactly the processes it started.  The GCS health check is shortened
(``RAY_health_check_*``) so a dead node is declared dead in about two seconds instead of the
default ~30.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from helpers import GLUE_DIR, NO_GLUE_REASON

BIN = Path(sys.executable).parent

needs_glue = pytest.mark.skipif(not (GLUE_DIR / "sst2" / "train.tsv").exists(), reason=NO_GLUE_REASON)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    """One ``ray start --block`` process tree."""

    proc: subprocess.Popen
    head: bool

    def raylet_pid(self) -> int:
        """The PID of this node's raylet: the process named ``raylet`` in the node's session or
        below its ``ray start``."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            procs = {}  # pid -> (name, state, parent, session)
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    text = stat.read_text()
                except OSError:
                    continue
                fields = text[text.rindex(")") + 2 :].split()
                procs[int(stat.parent.name)] = (text[text.index("(") + 1 : text.rindex(")")], fields[0],
                                                int(fields[1]), int(fields[3]))
            for pid, (name, state, parent, session) in procs.items():
                if name != "raylet" or state == "Z":
                    continue
                ancestors = set()
                while parent in procs and parent not in ancestors:
                    ancestors.add(parent)
                    parent = procs[parent][2]
                if session == self.proc.pid or self.proc.pid in ancestors:
                    return pid
            time.sleep(0.2)
        raise AssertionError("no raylet under this node's `ray start`")

    def stop(self) -> None:
        """SIGTERM to every process of the node's session, SIGKILL to what is left after 5 s."""
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass


@dataclass
class LocalCluster:
    """A head node and worker nodes on this machine, one CPU each, token authentication on."""

    root: Path
    env: dict
    address: str = ""
    client_address: str = ""
    nodes: list[Node] = field(default_factory=list)

    def _start(self, args: list[str], head: bool) -> Node:
        log = open(self.root / f"node-{len(self.nodes)}.log", "w")
        proc = subprocess.Popen([str(BIN / "ray"), "start", "--block", "--num-cpus=1", *args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(proc, head)
        self.nodes.append(node)
        return node

    def start_head(self, *, ray_client: bool = False) -> None:
        """The head node; ``ray_client``: with a Ray Client server (``client_address``) and,
        as in Ray's default head, the dashboard (our one try without it failed at the
        connection; whether that was ray-project/ray#63202 or the missing dashboard is not
        known)."""
        port = free_port()
        args = ["--head", f"--port={port}", "--disable-usage-stats"]
        if ray_client:
            client_port = free_port()
            args += [f"--ray-client-server-port={client_port}", f"--dashboard-port={free_port()}"]
            self.client_address = f"ray://127.0.0.1:{client_port}"
        else:
            args.append("--include-dashboard=false")
        self._start(args, head=True)
        self.address = f"127.0.0.1:{port}"
        self.wait_for_nodes(1)

    def add_worker(self) -> Node:
        before = self.alive_nodes()
        node = self._start([f"--address={self.address}"], head=False)
        self.wait_for_nodes(len(before) + 1)
        return node

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.head and n.proc.poll() is None]

    def alive_nodes(self) -> list[dict]:
        """``ray.nodes()`` of the alive nodes, read in a short-lived process (this pytest process
        may be a driver of its own)."""
        code = ("import json, ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); "
                "print(json.dumps([n for n in ray.nodes() if n['Alive']]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            return []
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout: float = 90) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.alive_nodes()
            if len(nodes) == count:
                return nodes
            time.sleep(0.5)
        raise AssertionError(f"cluster did not reach {count} alive nodes within {timeout} s")

    def ensure_workers(self, count: int) -> None:
        """Top the cluster up to ``count`` live worker nodes (a test may have killed one)."""
        for node in self.nodes:
            if not node.head and node.proc.poll() is None:
                try:
                    os.kill(node.raylet_pid(), 0)
                    continue
                except (ProcessLookupError, AssertionError):
                    node.stop()
        while len(self.workers) < count:
            self.add_worker()
        self.wait_for_nodes(count + 1)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def write_space(path: Path, model: str, *, name: str, targets: list[float], steps: int = 8,
                eval_interval: int = 4, max_concurrent: int = 2, learning_rates: list[float] | None = None,
                data: dict | None = None, learning_rate: float = 1e-3, **extra) -> Path:
    """A small magnitude-pruning search over the given target sparsities (one trial each, in
    this order), FIFO so no trial is stopped early, no dense reference.  ``data``: the space
    file's ``data:`` section (default: 160 SST-2 examples from the GLUE directory)."""
    points = [{"target_sparsity": t} for t in targets]
    space = {"method": "magnitude", "target_sparsity": {"choice": sorted(set(targets))},
             "schedule.start": 0.0, "schedule.end": 0.5}
    if learning_rates is not None:
        space["learning_rate"] = {"choice": sorted(set(learning_rates))}
        for point, lr in zip(points, learning_rates):
            point["learning_rate"] = lr
    raw = {
        "name": name, "model": model,
        "data": data or {"task": "sst2", "max_train_samples": 160, "max_eval_samples": 32, "max_seq_length": 32},
        "reference": "none",
        "objective": {"metric": "accuracy"},
        # A checkpoint at every evaluation, so a fault at any moment has one to resume from.
        "training": {"steps": steps, "batch_size": 16, "eval_interval": eval_interval,
                     "learning_rate": learning_rate, "checkpoint_budget": 1.0},
        "budget": {"num_samples": len(targets), "max_concurrent": max_concurrent},
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"algorithm": "tpe", "seed": 0},
        "space": space,
        "points_to_evaluate": points,
        **extra,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def search_args(space: Path, out: Path, address: str, *, data_dir: Path | None = GLUE_DIR) -> list[str]:
    """``rayprune search`` arguments for a search on the cluster (``data_dir=None``: the space
    file's data needs none, e.g. :func:`keyword_data`)."""
    args = ["search", "--space", str(space), "--output", str(out), "--address", address, "-v", "0"]
    return args + (["--data-dir", str(data_dir)] if data_dir else [])


def keyword_space(path: Path, model: str, *, name: str, targets: list[float], steps: int = 60,
                  eval_interval: int = 30, **options) -> Path:
    """:func:`write_space` on the keyword task (tests/search/keyword_task.py), which the tiny
    model learns in about 60 steps at learning rate 3e-3, so trials end clearly above the floor
    (verdict ok) without the GLUE checkout."""
    from search.keyword_task import keyword_data

    return write_space(path, model, name=name, targets=targets, steps=steps, eval_interval=eval_interval,
                       data=keyword_data(path.parent / f"{name}-data"), learning_rate=3e-3, **options)


def rayprune(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rayprune"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def trial_results(tune_dir: Path) -> dict[str, list[dict]]:
    """Every trial's reported results as Ray's storage holds them (``result.json`` lines)."""
    out = {}
    for result_file in sorted(Path(tune_dir).glob("*/result.json")):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def mlflow_children(search_dir: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    from rayprune.tracking.mlflow_tracker import default_tracking_uri

    client = MlflowClient(default_tracking_uri(search_dir))
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("rayprune.role") == "trial"]
