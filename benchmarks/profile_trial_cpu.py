"""Where a search's CPU goes: CPU seconds per process, and per thread of the trial's worker.

    python benchmarks/profile_trial_cpu.py --trials 1 --steps 100

Runs bench_overhead.py's search (GMP to 80 % on the bundled MiniLM, demo task, one trial at a
time) and samples ``/proc`` every half second: each process's CPU time (Ray's raylet, GCS,
dashboard and agents, the driver, the trial worker), the trial worker's CPU time per thread
(its compute threads against Ray's own), and a timeline of the driver's and the worker's CPU
rate, which shows the phases (``ray.init``, the worker's imports, model load, training, the
final front).  A diagnostic for bench_overhead.py's ratio, Linux only; hand-written because
Ray's dashboard (off in rayprune's local clusters) reports per-process CPU but not per thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TICK = os.sysconf("SC_CLK_TCK")
WORKER = "ray::ImplicitFunc"  # the process title of a function trainable's worker


def _cpu_and_name(stat_file: Path) -> tuple[float, str]:
    """(user + system CPU seconds, the command name) from a ``/proc/.../stat`` file."""
    text = stat_file.read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK, text[text.index("(") + 1:text.rindex(")")]


def processes() -> dict[int, tuple[float, str]]:
    """pid -> (CPU seconds, command line) of every process that can be read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cpu, _ = _cpu_and_name(entry / "stat")
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            found[int(entry.name)] = (cpu, command.strip()[:100])
    return found


def threads_of(pid: int) -> dict[int, tuple[float, str]]:
    """tid -> (CPU seconds, thread name) of ``pid``'s threads."""
    found = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found[int(task.name)] = _cpu_and_name(task / "stat")
        except (OSError, ValueError, IndexError):
            continue
    return found


def main() -> None:
    import bench_overhead

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_overhead.add_space_arguments(parser, trials=1, steps=100)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between timeline rows")
    args = parser.parse_args()
    from rayprune.config import parse_spec
    from rayprune.search.driver import run_search
    from rayprune.search.preflight import prepare_search

    work = Path(tempfile.mkdtemp(prefix="rayprune-profile-"))
    spec = parse_spec(bench_overhead.space(args, "profile"), path=str(work / "space.yaml"))
    prepared = prepare_search(spec, output=work / "search")

    me = os.getpid()
    start_cpu = processes()
    last_cpu: dict[int, tuple[float, str]] = {}
    worker_threads: dict[int, tuple[float, str]] = {}
    timeline: list[tuple[float, float, float]] = []  # (t, driver CPU s, workers' CPU s)
    done = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not done.is_set():
            now = processes()
            last_cpu.update(now)
            workers = [pid for pid, (_, cmd) in now.items() if cmd.startswith(WORKER)]
            for pid in workers:
                worker_threads.update({(pid, tid): v for tid, v in threads_of(pid).items()})
            timeline.append((time.perf_counter() - t0, now.get(me, (0.0, ""))[0],
                             sum(now[pid][0] for pid in workers)))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run_search(prepared, verbose=0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()

    print(f"\nsearch wall {wall:.1f} s on {os.cpu_count()} cores ({wall * os.cpu_count():.0f} core-s)")
    print("\nCPU seconds during the search, per process:")
    used = [(cpu - start_cpu.get(pid, (0.0, ""))[0], pid, cmd) for pid, (cpu, cmd) in last_cpu.items()]
    for cpu, pid, cmd in sorted(used, reverse=True)[:15]:
        if cpu >= 0.05:
            print(f"  {cpu:7.1f}  {pid:>7}  {cmd}")
    print("\nthe trial workers' threads (CPU seconds, name):")
    for (pid, tid), (cpu, name) in sorted(worker_threads.items(), key=lambda kv: -kv[1][0])[:8]:
        print(f"  {cpu:7.1f}  {pid}/{tid}  {name}")
    print("\ntimeline (cores in use since the previous row): t, driver, trial worker")
    previous = None
    for row in timeline:
        if previous is None or row[0] - previous[0] >= args.every:
            if previous is not None:
                span = row[0] - previous[0]
                # A worker that exits between two samples makes its CPU drop out of the sum.
                print(f"  {row[0]:6.1f}  {(row[1] - previous[1]) / span:5.2f}  "
                      f"{max(0.0, row[2] - previous[2]) / span:5.2f}")
            previous = row
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
