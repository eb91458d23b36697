"""The tracking-URI preflight and credential hiding (no MLflow server needed: a dead port and a
socket that never answers stand for the servers that went away)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from rayprune.errors import SpecError
from rayprune.tracking.uris import check_tracking_uri, redact_uri, scrub


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_credentials_and_query_tokens_are_hidden():
    assert redact_uri("https://alice:s3cret@mlflow.example:5000/prefix?token=abc&x=1") == \
        "https://***@mlflow.example:5000/prefix?token=***&x=***"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_uri("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    message = "API request to https://alice:s3cret@h/api?token=abc failed"
    cleaned = scrub(message, "https://alice:s3cret@h/?token=abc")
    assert "s3cret" not in cleaned and "abc" not in cleaned and "alice" not in cleaned


def test_a_dead_server_is_reported_within_seconds_naming_the_cause():
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(SpecError) as err:
        check_tracking_uri(uri)
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert "connection refused" in text and "s3cret" not in text and "***@127.0.0.1" in text


def test_a_hung_server_is_reported_after_the_timeout():
    """A server that accepts the connection and never answers (stopped with SIGSTOP, say)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(SpecError, match="no answer within 1 s"):
            check_tracking_uri(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - start < 4
    finally:
        for conn, _ in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("uri, fragment", [
    ("/tmp/mlruns", "MLflow 3 refuses the file store"),
    ("file:///tmp/mlruns", "MLflow 3 refuses the file store"),
    ("htp://127.0.0.1:5000", "unsupported scheme 'htp'"),
])
def test_bad_schemes_are_refused_with_what_is_allowed(uri, fragment):
    with pytest.raises(SpecError) as err:
        check_tracking_uri(uri)
    assert fragment in str(err.value) and "http://" in str(err.value)


def test_sqlite_needs_an_existing_folder(tmp_path):
    check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(SpecError, match="does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path}/missing/mlflow.db")
