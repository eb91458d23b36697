"""``--storage s3://...`` against a real S3 API on loopback (moto's server), with the CLI: Ray
Tune writes the trials' results and checkpoints into the bucket through pyarrow, and
``rayprune export`` downloads the winners' checkpoints from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from faultlib import free_port, keyword_space, rayprune

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port and the environment that points AWS clients
    (pyarrow's S3 filesystem included, via ``AWS_ENDPOINT_URL``) at it, with one bucket."""
    pytest.importorskip("moto", reason="moto[server] (a test dependency) is not installed")
    import boto3

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(f"moto_server did not start: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.3)
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket="runs")
        yield env, client
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_search_on_s3_storage_keeps_its_trials_in_the_bucket_and_exports_from_there(s3, tiny_dir, tmp_path):
    env_extra, client = s3
    env = {**os.environ, **env_extra, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    space = keyword_space(tmp_path / "space.yaml", tiny_dir, name="bucketed", targets=[0.5, 0.8])
    out = tmp_path / "runs"
    result = rayprune("search", "--space", str(space), "--output", str(out), "--storage", "s3://runs/searches",
                      "-v", "0", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="runs")
            for o in page.get("Contents", [])]
    assert any(k.startswith("searches/bucketed/") and k.endswith("/result.json") for k in keys), keys[:20]
    assert not (out / "bucketed" / "ray").exists()  # nothing of Ray's went to the local directory
    rows = (out / "bucketed" / "results.csv").read_text()
    assert rows.count("s3://runs/searches/bucketed/") == 2  # both checkpoints, as URIs

    exported = tmp_path / "exported"
    result = rayprune("export", str(out / "bucketed"), "--out", str(exported), "--top", "1", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (entry,) = sorted(exported.iterdir())
    info = json.loads((entry / "rayprune.json").read_text())
    assert (entry / "model.safetensors").is_file() and info["sparsity"] > 0.45

    # Without the bucket's credentials the export says what failed, without a traceback.
    denied = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    result = rayprune("export", str(out / "bucketed"), "--out", str(tmp_path / "again"), "--top", "1", env=denied)
    assert result.returncode == 2 and "cannot download its checkpoint s3://runs/searches/bucketed/" in result.stderr
    assert "Traceback" not in result.stderr
