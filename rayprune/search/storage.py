"""Where Ray Tune keeps a search's trial results and checkpoints, and whether every node can
reach it.

Ray Tune writes results and checkpoints to ``RunConfig(storage_path=...)`` through pyarrow
filesystems: a bucket URI (``s3://``, ``gs://``, any scheme pyarrow knows) or a path.  Since
Ray 2.7 nothing is synced to the head node (ECOSYSTEM.md pain 9), so on a cluster with more
than one node a path only works when every node sees the same files there (NFS, EFS, a
Filestore or Lustre mount).  A node-local path there would make a retried trial start from
scratch on another node, or fail, after its compute was spent: :func:`check_reachable_by_all_nodes`
refuses it before any trial starts.

The search directory (``<output>/<name>``) keeps the small files the driver writes
(``search.json``, ``results.csv``, the front, ``tracking.json`` and
``tracking_trials.jsonl``, the lock); Ray's storage for the
search is ``<storage>/<name>`` (``<search dir>/ray`` when no storage is given).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rayprune.errors import SpecError

__all__ = ["SearchStorage", "resolve_storage", "check_reachable_by_all_nodes", "alive_nodes",
           "is_ray_client", "NETWORK_FILESYSTEMS", "restoring_into", "search_dir_being_restored"]

# Filesystem types (``/proc/mounts``) whose files every node that mounts them sees.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "cephfs", "glusterfs",
    "fuse.glusterfs", "beegfs", "fuse.gcsfuse", "fuse.s3fs", "fuse.mountpoint-s3", "fuse.juicefs",
    "fuse.sshfs", "fuse.cephfs", "wekafs", "orangefs", "9p", "virtiofs", "alluxio", "fuse.alluxio",
})


@dataclass(frozen=True)
class SearchStorage:
    """Ray Tune's storage for one search.

    ``storage_path`` is what ``RunConfig(storage_path=...)`` gets (a URI or an absolute path),
    ``experiment_path`` the experiment inside it (``Tuner.restore`` / ``can_restore`` take it),
    ``is_uri`` whether it is a bucket rather than a path this machine can stat.
    """

    storage_path: str
    experiment_name: str
    is_uri: bool

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.experiment_name}"

    @property
    def local_path(self) -> Path | None:
        """The storage as a local path (``None`` for a bucket)."""
        return None if self.is_uri else Path(self.storage_path)


def resolve_storage(storage: str | None, search_dir: Path, name: str) -> SearchStorage:
    """Ray's storage for the search named ``name``: ``<storage>/<name>`` or ``<search_dir>/ray``.

    ``storage`` may be ``s3://bucket/prefix``, ``gs://...``, another pyarrow scheme,
    ``file:///abs/path`` or a path (``~`` expanded, made absolute).

    Raises:
        SpecError: a ``file://`` URI with a host, a relative ``file:`` path, or a scheme Ray Tune
            cannot write to (``javascript://x``; see :data:`rayprune.config.spec.STORAGE_SCHEMES`).
    """
    if not storage:
        return SearchStorage(str((Path(search_dir) / "ray").resolve()), "tune", is_uri=False)
    parsed = urlparse(storage)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise SpecError(f"--storage {storage!r}: a file URI names an absolute path on this machine "
                            f"(file:///mnt/shared/runs); for another machine's disk mount it (NFS) "
                            f"and give the mount point")
        base = Path(parsed.path)
    elif len(parsed.scheme) > 1:  # "C:" on Windows is a drive, not a scheme
        from rayprune.config.spec import STORAGE_SCHEMES

        scheme = storage.split("://", 1)[0]  # as written: urlparse lowers it, pyarrow does not
        if "://" in storage and scheme not in STORAGE_SCHEMES:
            raise SpecError(f"--storage {storage!r}: Ray Tune cannot store results under {scheme[:30]}://; "
                            f"allowed: " + ", ".join(f"{s}://" for s in STORAGE_SCHEMES) + " or a path")
        return SearchStorage(f"{storage.rstrip('/')}/{name}", "tune", is_uri=True)
    else:
        base = Path(os.path.expanduser(storage)).resolve()
    return SearchStorage(str(base / name), "tune", is_uri=False)


# The search directory a resuming driver restores Ray's pickled state into (see restoring_into).
_RESTORING_INTO: list[Path] = []


@contextlib.contextmanager
def restoring_into(search_dir: Path):
    """While ``Tuner.restore`` and the resumed ``fit`` unpickle a search's state, objects in it
    that name files of the search directory (the Optuna study's SQLite storage) open them in
    ``search_dir``, where the directory is now, instead of where it was when pickled: the
    search directory is relocatable, so a copy resumed elsewhere uses its own files."""
    _RESTORING_INTO.append(Path(search_dir).resolve())
    try:
        yield
    finally:
        _RESTORING_INTO.pop()


def search_dir_being_restored() -> Path | None:
    """The search directory this process is restoring a search into (:func:`restoring_into`), or None."""
    return _RESTORING_INTO[-1] if _RESTORING_INTO else None


def alive_nodes() -> list[dict]:
    """The alive nodes of the cluster this driver is connected to (``ray.nodes()``)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _mount_of(path: Path, mounts_text: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the longest mount point that contains ``path``."""
    best = ("/", "")
    text = str(path)
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = text == point or text.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fields[2])
    return best


def _is_network_mount(path: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return False
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return _mount_of(existing.resolve(), mounts)[1] in NETWORK_FILESYSTEMS


def _visible_on_every_node(directory: Path, nodes: list[dict]) -> list[str]:
    """Write a marker file under ``directory`` and look for it from a zero-CPU task pinned to
    each node; return the addresses of the nodes that do not see it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".rayprune-probe-{secrets.token_hex(6)}"
    marker.write_text("rayprune storage probe")

    @ray.remote(num_cpus=0, max_retries=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        refs = {n["NodeManagerAddress"]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        return [address for address, ref in refs.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)


def _local_addresses() -> set[str]:
    addresses = {"127.0.0.1", "localhost", socket.gethostname()}
    try:
        addresses.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    try:
        import ray

        addresses.add(ray.util.get_node_ip_address())
    except Exception:  # not connected: the socket view is all there is
        pass
    return addresses


def is_ray_client() -> bool:
    """True when this process is a Ray Client driver (``ray.init("ray://...")``)."""
    import ray

    return ray.util.client.ray.is_connected()


def _check_from_head(storage: SearchStorage) -> str:
    """Under Ray Client (``--address ray://``) Tune runs its controller on the head node, so the
    storage path is the head's: check it there."""
    import ray
    from ray.exceptions import RayTaskError

    @ray.remote(num_cpus=0, max_retries=0, resources={"node:__internal_head__": 0.001})
    def check_on_head(storage: SearchStorage) -> str:
        return check_reachable_by_all_nodes(storage)

    try:
        return ray.get(check_on_head.remote(storage), timeout=300)
    except RayTaskError as err:
        if isinstance(err.cause, SpecError):
            raise SpecError(str(err.cause)) from None
        raise


def check_reachable_by_all_nodes(storage: SearchStorage, nodes: list[dict] | None = None, *,
                                 probe: bool = True) -> str:
    """Refuse a storage path that some alive node cannot see; return why it is accepted.

    Accepted without looking further: a bucket URI, a single-node cluster, nodes that all run
    on this machine, a path on a network filesystem (:data:`NETWORK_FILESYSTEMS`).  Otherwise
    (``probe``) a marker file written here must be visible from every node; without ``probe``
    nodes on other machines count as not seeing it.  Under Ray Client the check runs on the
    head node, where Tune's controller then runs.

    Raises:
        SpecError: the path is node-local on a multi-node cluster; says what to use instead.
    """
    if storage.is_uri:
        return "bucket URI"
    if nodes is None and is_ray_client():
        return _check_from_head(storage)
    nodes = alive_nodes() if nodes is None else nodes
    if len(nodes) <= 1:
        return "single node"
    path = storage.local_path
    if {n.get("NodeManagerAddress") for n in nodes} <= _local_addresses():
        return "all nodes on this machine"
    if _is_network_mount(path):
        return "network filesystem"
    missing = _visible_on_every_node(path, nodes) if probe else [
        n.get("NodeManagerAddress") for n in nodes if n.get("NodeManagerAddress") not in _local_addresses()]
    if not missing:
        return "visible from every node"
    raise SpecError(
        f"storage {path} is local to this machine, but the cluster has {len(nodes)} nodes and "
        f"{', '.join(sorted(map(str, missing)))} cannot see it: a trial retried on another node "
        f"would lose its checkpoints. Use --storage (or `storage:` in the space file) with a "
        f"bucket (s3://bucket/prefix, gs://bucket/prefix) or a path every node mounts "
        f"(NFS/EFS/Filestore), e.g. --storage /mnt/shared/rayprune")
