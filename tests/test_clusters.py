"""The cluster configs in clusters/ are valid: the launcher configs against the autoscaler JSON
schema that ships inside the installed Ray package, the KubeRay manifests for the keys the
RayCluster / RayJob CRDs require, and both for what rayprune needs of them (a CPU head, GPU
workers, rayprune installed, Ray's token on every node, shared storage)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTERS = Path(__file__).resolve().parents[1] / "clusters"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_matches_the_autoscaler_schema(name):
    jsonschema.validate(load(name), ray_schema())


def test_the_schema_check_catches_a_broken_config():
    config = load("aws.yaml")
    broken = copy.deepcopy(config)
    del broken["provider"]
    with pytest.raises(jsonschema.ValidationError, match="provider"):
        jsonschema.validate(broken, ray_schema())
    misspelt = copy.deepcopy(config)
    misspelt["available_node_types"]["gpu_worker"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(misspelt, ray_schema())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_has_a_cpu_head_gpu_workers_and_installs_rayprune(name):
    config = load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    assert workers and all(w["max_workers"] >= 1 for w in workers.values())
    if config["provider"]["type"] == "aws":  # Ray reads CPUs/GPUs off the instance type
        assert all(w["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5")) for w in workers.values())
    else:
        assert all(w["resources"]["GPU"] >= 1 for w in workers.values())
    assert config["docker"]["image"].endswith("-gpu") and "-gpu" not in config["docker"]["head_image"]
    ray_version = config["docker"]["image"].split(":")[1].split("-")[0]
    setup = " ".join(config["setup_commands"])
    assert "rayprune-0.1.0-py3-none-any.whl" in setup and f"ray[tune]=={ray_version}" in setup
    assert any(target.endswith(".whl") for target in config["file_mounts"])
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "/home/ray/.ray/auth_token" in config["file_mounts"]
    mlflow = " ".join(config["head_start_ray_commands"])
    assert "--app-name basic-auth" in mlflow and "--allowed-hosts" in mlflow and "--host 0.0.0.0" in mlflow


def _check_pod_template(template: dict, where: str) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert c.get("name") and c.get("image"), f"{where}: a container needs name and image"
    return containers


def _check_ray_cluster_spec(spec: dict, where: str) -> None:
    """The keys KubeRay's RayCluster CRD (ray.io/v1) requires, plus a GPU worker group and the
    auth token and shared volume on every Ray container."""
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams"), dict), f"{where}: headGroupSpec.rayStartParams"
    containers = _check_pod_template(head["template"], f"{where}.headGroupSpec")
    ray_containers = [containers[0]]
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker group"
    for group in groups:
        for key in ("groupName", "template", "rayStartParams"):
            assert key in group, f"{where}: workerGroupSpecs[].{key}"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        worker = _check_pod_template(group["template"], f"{where}.{group['groupName']}")[0]
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        ray_containers.append(worker)
    assert "nvidia.com/gpu" not in containers[0]["resources"]["limits"]  # CPU head
    for c in ray_containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert any(m["mountPath"] == "/shared" for m in c["volumeMounts"])


def test_kuberay_raycluster_has_the_required_keys():
    manifest = load("kuberay-raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_ray_cluster_spec(manifest["spec"], "RayCluster")
    mlflow = next(c for c in manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"] if c["name"] == "mlflow")
    assert "basic-auth" in mlflow["command"] and "--allowed-hosts" in mlflow["command"]


def test_kuberay_rayjob_has_the_required_keys_and_runs_a_search():
    manifest = load("kuberay-rayjob.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    _check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob.rayClusterSpec")
    entry = spec["entrypoint"].split()
    assert entry[:2] == ["rayprune", "search"]
    for option in ("--space", "--output", "--storage"):
        assert option in entry
    assert entry[entry.index("--storage") + 1].startswith(("/shared", "s3://", "gs://"))
    pvc = load("kuberay-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
