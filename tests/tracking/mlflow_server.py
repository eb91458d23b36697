"""A real ``mlflow server`` on loopback that a test can kill and start again on the same port and
store (the tracking outage of issue 11), and a few REST reads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with a SQLite store and proxied artifacts under ``root`` (or the
    command given), one worker, in its own process group so :meth:`kill` stops all of it."""

    def __init__(self, root: Path, command: list[str] | None = None, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command or [
            str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"server-{self.starts}.log", "w")
        self.starts += 1
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / f"server-{self.starts - 1}.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise AssertionError(f"mlflow server did not answer on {self.url} within {timeout} s")

    def kill(self) -> None:
        """The server goes away at once (SIGKILL to its whole process group)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None

    def get(self, route: str, **query) -> bytes:
        url = f"{self.url}{route}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def get_json(self, route: str, **query) -> dict:
        return json.loads(self.get(route, **query) or b"{}")
