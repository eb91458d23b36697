"""Trials per hour on a 1-node vs a 2-node local Ray cluster, each node the same CPU share.

    python benchmarks/bench_cluster.py --trials 8 --steps 150

Both clusters are real: each node is its own ``ray start`` (``--num-cpus 1``) with a shared auth
token, and the same search (magnitude pruning of a small config-built BERT on the bundled demo
task, FIFO, one CPU per trial) runs on each through ``rayprune``'s driver.  Throughput is
trials / (last trial end - first trial start), read from the trials' own results in Ray's
storage, so driver start-up and preflight are left out; the end-to-end wall time is reported
beside it.  The ratio of the two clusters' trials per hour comes from one run of this script.

"The same CPU share" is enforced with CPU affinity (``--pin``, the default where the machine has
at least two cores): node *i* and every process it starts (raylet, workers, trials) run on core
*i* only, and the driver runs on the head's core, as it would on the head machine of a real
cluster.  Without pinning (``--no-pin``) a 1-node cluster on a 2-core machine has the second
core free for its raylet, GCS and driver, while a 2-node cluster runs a trial on both cores
beside them: that measures this machine's contention, not what a second node adds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BIN = Path(sys.executable).parent


def small_bert(directory: Path, hidden: int) -> str:
    """A 2-layer BERT built from a config with the bundled MiniLM tokenizer (no download)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rayprune.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=4 * hidden, max_position_embeddings=128, num_labels=2))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def on_core(index: int):
    """A ``preexec_fn`` that confines a child (and everything it starts) to the index-th usable core."""
    core = sorted(os.sched_getaffinity(0))[index]
    return lambda: os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``nodes`` one-CPU nodes on this machine, each a ``ray start --block`` in its own session."""

    def __init__(self, nodes: int, root: Path, env: dict, pin: bool) -> None:
        self.procs: list[subprocess.Popen] = []
        self.env = env
        self.pin = pin
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self._start(["--head", f"--port={port}", "--include-dashboard=false", "--disable-usage-stats"], root)
        for _ in range(nodes - 1):
            self._start([f"--address={self.address}"], root)
        self._wait_for(nodes)

    def _start(self, args: list[str], root: Path) -> None:
        index = len(self.procs)
        log = open(root / f"node-{index}.log", "w")
        self.procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--block", "--num-cpus=1", *args],
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, preexec_fn=on_core(index) if self.pin else None))
        time.sleep(2 if len(self.procs) == 1 else 0)

    def _wait_for(self, count: int) -> None:
        code = ("import ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1] == str(count):
                return
            time.sleep(1)
        raise RuntimeError(f"cluster did not reach {count} nodes")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    continue


def space(args, name: str, model: str) -> dict:
    targets = [round(0.5 + 0.4 * i / max(1, args.trials - 1), 3) for i in range(args.trials)]
    return {
        "name": name, "model": model,
        "data": {"task": "demo", "max_train_samples": 1000, "max_eval_samples": 200, "max_seq_length": 32},
        "objective": {"metric": "accuracy"},
        "reference": "none",
        "training": {"steps": args.steps, "batch_size": 16, "eval_interval": args.steps // 3,
                     "learning_rate": 1e-3, "threads_per_trial": 1},
        "budget": {"num_samples": args.trials, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": {"kind": "fifo"},
        "search": {"algorithm": "tpe", "seed": 0},
        "space": {"method": "magnitude", "target_sparsity": {"choice": targets},
                  "schedule.start": 0.0, "schedule.end": 0.5},
        "points_to_evaluate": [{"target_sparsity": t} for t in targets],
    }


def run_on(nodes: int, args, root: Path, model: str, env: dict) -> dict:
    """One search on a fresh ``nodes``-node cluster; its throughput from the trials' results."""
    import yaml

    work = root / f"{nodes}node"
    work.mkdir()
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space(args, f"bench{nodes}", model)))
    cluster = Cluster(nodes, work, env, args.pin)
    try:
        start = time.monotonic()
        # The driver runs on the head's core, as it would on the head machine.
        result = subprocess.run([str(BIN / "rayprune"), "search", "--space", str(path), "--output", str(work / "runs"),
                                 "--address", cluster.address, "-v", "0"], env=env, capture_output=True, text=True,
                                preexec_fn=on_core(0) if args.pin else None)
        wall = time.monotonic() - start
    finally:
        cluster.stop()
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    spans, nodes_used, per_node = [], set(), {}
    for result_file in (work / "runs" / f"bench{nodes}" / "ray" / "tune").glob("*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        spans.append((lines[0]["timestamp"] - lines[0]["time_total_s"], lines[-1]["timestamp"]))
        nodes_used.add(lines[-1]["node_id"])
        per_node.setdefault(lines[-1]["node_id"], []).append(spans[-1][1] - spans[-1][0])
    span = max(end for _, end in spans) - min(begin for begin, _ in spans)
    per_trial = sum(end - begin for begin, end in spans) / len(spans)
    return {"nodes": nodes, "pinned": args.pin, "trials": len(spans), "nodes_used": len(nodes_used), "span_s": round(span, 1),
            "trials_per_hour": round(len(spans) / span * 3600, 1), "mean_trial_s": round(per_trial, 1),
            # Which node is slower says where the contention is (the head also runs the driver).
            "mean_trial_s_per_node": sorted(round(sum(v) / len(v), 1) for v in per_node.values()),
            "search_wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=len(os.sched_getaffinity(0)) >= 2,
                        help="one core per node (default where there are two or more)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_cluster-"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    try:
        model = small_bert(root / "model", args.hidden)
        rows = [run_on(n, args, root, model, env) for n in (1, 2)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        print(json.dumps(row))
    ratio = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]
    print(json.dumps({"trials_per_hour_ratio_2_vs_1": round(ratio, 2),
                      "wall_ratio_1_vs_2": round(rows[0]["search_wall_s"] / rows[1]["search_wall_s"], 2)}))


if __name__ == "__main__":
    main()
