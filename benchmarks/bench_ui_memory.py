"""Memory of `rayprune ui`: start it on a search directory, wait until the server answers
/health and then SETTLE seconds, print the RSS of every process of its tree and the total, stop it.

    PYTHONPATH=. python benchmarks/bench_ui_memory.py <search dir> [PORT] [SETTLE]

Results: benchmarks/RESULTS.md, "rayprune ui memory".
"""
import os, subprocess, sys, time, urllib.request, signal
search_dir = sys.argv[1]
port = sys.argv[2] if len(sys.argv) > 2 else "5123"
settle = float(sys.argv[3]) if len(sys.argv) > 3 else 20
env = dict(os.environ)
proc = subprocess.Popen([sys.executable, "-m", "rayprune.cli", "ui", search_dir, "--port", port],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
t0 = time.time()
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2); break
    except Exception:
        if time.time() - t0 > 180: print("no answer"); break
        time.sleep(0.5)
up = time.time() - t0
time.sleep(settle)
def tree(root):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p))
            except OSError: pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop(); out.append(pid); todo += kids.get(pid, [])
    return out
total, rows = 0, []
for pid in tree(proc.pid):
    try:
        rss = int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1])
        cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:110]
    except (OSError, IndexError): continue
    total += rss; rows.append((rss, pid, cmd))
for rss, pid, cmd in sorted(rows, reverse=True):
    print(f"{rss/1024:8.1f} MB  {pid}  {cmd}")
print(f"processes: {len(rows)}  total RSS: {total/1024:.0f} MB  (answered after {up:.1f} s)")
os.killpg(proc.pid, signal.SIGINT)
try: proc.wait(20)
except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
