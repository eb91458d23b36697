"""One search directory, one driver.

Two drivers on one search directory overwrite each other's ``tracking.json``, ``results.csv``
and Ray state and share one MLflow parent; a finished search started again without
``--resume`` re-runs its trials into the same parent.  So a driver holds an exclusive lock on
``<search dir>/driver.lock`` for as long as it runs, and checks what the directory already holds
before it starts:

* :class:`SearchDirLock` is an ``fcntl.flock`` lock on an open file (Linux maps it to a POSIX
  lock over NFS, so drivers on two hosts exclude each other there too): the kernel releases it
  when the driver dies, even by SIGKILL, so a stale lock from a killed driver is simply taken
  over; the file records the holder's PID and host so a refused second driver can say who holds
  it.  (``flock`` rather than ``lockf``: a POSIX lock is the process's and drops when any of its
  descriptors for the file closes, so a second search in one process could not be refused.)
* :func:`check_start` refuses a finished search run again without ``--resume`` (naming the two
  ways forward), a search directory from another space file, and a resume whose space changed
  (naming what changed).
* :func:`check_resume_files_trusted` refuses to resume from Ray state that someone else could
  have written: ``Tuner.restore`` unpickles ``tuner.pkl``, the searcher state and the trials'
  pickled fields, so whoever can write them runs code in the driver.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import grp
import json
import os
import pwd
import socket
import stat
import time
from pathlib import Path
from typing import Any

from rayprune.errors import SpecError

__all__ = ["SearchDirLock", "check_start", "check_resume_files_trusted", "describe_changes",
           "LOCK_NAME"]

LOCK_NAME = "driver.lock"


class SearchDirLock:
    """The live driver's exclusive lock on a search directory (a context manager).

    Raises:
        SpecError: another live driver holds it (names its PID and host).
    """

    def __init__(self, search_dir: Path) -> None:
        self.path = Path(search_dir) / LOCK_NAME
        self._fd: int | None = None
        #: The holder found in the file when the lock was free (a driver that died), or None.
        self.taken_over: dict | None = None

    def acquire(self) -> "SearchDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            who = (f"PID {holder.get('pid')} on host {holder.get('host')} (since {holder.get('started')})"
                   if holder else "another driver")
            raise SpecError(f"{self.path.parent}: search directory in use by {who}; wait for it to "
                            f"end or stop it, or give this search another `name:` or --output") from None
        previous = _read_holder(fd)
        if previous and previous.get("pid") is not None:
            self.taken_over = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder and unlock.  The file stays: unlinking a lock file lets a driver
        that opened it just before lock a file nobody else sees."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SearchDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------ start checks
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def describe_changes(old: dict, new: dict, *, limit: int = 6) -> str:
    """``key: old -> new`` for every leaf that differs between two spec dicts (``path`` and
    ``raw_hash`` left out: they say where the file is and that it changed, not what)."""
    ignored = {"path", "raw_hash"}
    a = {k: v for k, v in _flatten(json.loads(json.dumps(old, default=str))).items() if k.split(".")[0] not in ignored}
    b = {k: v for k, v in _flatten(json.loads(json.dumps(new, default=str))).items() if k.split(".")[0] not in ignored}
    changes = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            changes.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    if not changes:
        return "the file's text (comments or layout only)"
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


def _is_finished(search_dir: Path) -> bool:
    """A search that ended by itself: its front is written and ``results.csv`` lists no trial
    cut off by an interruption."""
    if not (search_dir / "pareto.json").exists():
        return False
    try:
        with open(search_dir / "results.csv", newline="") as fh:
            return all(row.get("status") != "interrupted" for row in csv.DictReader(fh))
    except OSError:
        return False


def check_start(search_dir: Path, spec_dict: dict, spec_hash: str, spec_path: str, *, resume: bool) -> None:
    """Refuse to start a driver on a search directory that holds something it must not touch.

    Raises:
        SpecError: without ``--resume``, the directory already holds a search (finished: the two
            ways forward; interrupted: ``--resume``); with ``--resume``, the space changed (what).
    """
    meta_file = Path(search_dir) / "search.json"
    if not meta_file.exists():
        return
    old = json.loads(meta_file.read_text())
    changed = old.get("spec_hash") != spec_hash
    if resume:
        if changed:
            raise SpecError(
                f"{spec_path}: the space changed since the search in {search_dir} started "
                f"({describe_changes(old.get('spec', {}), spec_dict)}); Ray Tune cannot restore a search "
                f"into a different space: resume with the original file (a copy is in "
                f"{Path(search_dir) / 'space.yaml'}), or start a new search with another `name:` or --output")
        return
    if changed:
        raise SpecError(f"{search_dir} already holds a search from a different space file "
                        f"({describe_changes(old.get('spec', {}), spec_dict)}); use another `name:` or --output, "
                        f"or --resume with the same file")
    if _is_finished(Path(search_dir)):
        raise SpecError(f"{search_dir} holds a finished search; running it again would mix two searches in one "
                        f"directory and one MLflow parent. Either --resume it (rebuilds results and the front, "
                        f"re-runs nothing finished) or start a new search with another `name:` or --output")
    raise SpecError(f"{search_dir} holds an unfinished search; continue it with --resume, or start a new "
                    f"search with another `name:` or --output")


# ------------------------------------------------------------------------------ resume trust
def _group_is_private(gid: int, uid: int) -> bool:
    """Whether group ``gid`` is ``uid``'s own user-private group (named like the user, no
    other members), so that group write access gives no one else write access."""
    try:
        group = grp.getgrgid(gid)
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return group.gr_name == user.pw_name and user.pw_gid == gid and set(group.gr_mem) <= {user.pw_name}


def _untrusted(path: Path, uid: int) -> str | None:
    info = path.lstat()
    if info.st_uid != uid:
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = str(info.st_uid)
        return f"{path} is owned by {owner}"
    if stat.S_ISLNK(info.st_mode):
        return None  # its target is checked where it lies inside the tree; links themselves have no mode
    if info.st_mode & stat.S_IWOTH:
        return f"{path} is writable by every user"
    if info.st_mode & stat.S_IWGRP and not _group_is_private(info.st_gid, uid):
        return f"{path} is writable by group {_group_name(info.st_gid)}"
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_resume_files_trusted(ray_dir: Path, experiment_dir: Path) -> None:
    """Refuse to resume when Ray's state there could have been written by another user.

    Checked: the Ray storage directory and the experiment directory themselves (whoever can
    write a directory can replace the files in it), and every file directly in the experiment
    directory (``tuner.pkl``, ``searcher-state-*.pkl``, ``experiment_state-*.json`` whose trial
    fields are pickles).  Each must be owned by this user and writable by no one else.

    Raises:
        SpecError: names the first file or directory that fails, and what to do.
    """
    uid = os.getuid()
    paths = [Path(ray_dir), Path(experiment_dir)]
    paths += sorted(p for p in Path(experiment_dir).iterdir() if not p.is_dir())
    for path in paths:
        if not path.exists():
            continue
        problem = _untrusted(path, uid)
        if problem:
            raise SpecError(
                f"refusing to resume: {problem}. Resuming unpickles Ray's saved state "
                f"(tuner.pkl, the searcher state), so anyone who can write it runs code in this driver. "
                f"If you trust its contents, make it yours and private (chown -R $USER {experiment_dir}; "
                f"chmod -R go-w {ray_dir}) and resume again")
