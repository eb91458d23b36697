"""Tracking URIs: what the driver checks before Ray starts, how long one tracking call may take,
and how a URI is shown or stored without its credentials.

No MLflow import here: the preflight talks to a server with the standard library, so a dead or
wrong URI is reported within seconds instead of after MLflow's default retry cycles (seven
retries with exponential backoff and a 120 s timeout per request: minutes per call).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rayprune.errors import SpecError

__all__ = ["redact_uri", "scrub", "check_tracking_uri", "configure_tracking_timeouts",
           "TRACKING_TIMEOUTS", "PREFLIGHT_TIMEOUT_S"]

#: The MLflow HTTP settings the driver runs with (each only if the user has not set it): a call
#: to an unreachable or hung server fails after about ``timeout * (retries + 1)`` seconds plus
#: one backoff, and the tracker then journals instead of retrying (see ``SearchTracker``).
TRACKING_TIMEOUTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}

#: Seconds the preflight waits for a tracking server's answer.
PREFLIGHT_TIMEOUT_S = 5.0

_SERVER_SCHEMES = ("http", "https")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_OTHER_SCHEMES = ("databricks", "databricks-uc")
_REDACTED = "***"


def configure_tracking_timeouts() -> None:
    """Give this process's MLflow HTTP calls short timeouts and one retry (values the user set
    in the environment win).  Called by the driver before it creates its tracker, so a tracking
    server that goes away costs a search seconds, not the ~4-minute retry cycles per call that
    hung the driver for 12 minutes (issue 11)."""
    for key, value in TRACKING_TIMEOUTS.items():
        os.environ.setdefault(key, value)


def redact_uri(uri: str | None) -> str:
    """``uri`` with any user name, password and every query value replaced by ``***``, for
    printing and for files in the search directory (``tracking.json``, Ray's pickled callback)."""
    if not uri:
        return ""
    parts = urlsplit(uri)
    shown = uri
    if "@" in parts.netloc:
        shown = shown.replace(parts.netloc, f"{_REDACTED}@{parts.netloc.rsplit('@', 1)[1]}", 1)
    if parts.query:
        hidden = urlencode([(k, _REDACTED) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        shown = shown.replace(f"?{parts.query}", f"?{hidden}", 1)
    return shown


def scrub(text: str, uri: str | None) -> str:
    """``text`` (an error message from MLflow or requests, which quote the request URL) with the
    secret parts of ``uri`` replaced by ``***``."""
    if not uri:
        return text
    parts = urlsplit(uri)
    secrets = []
    if "@" in parts.netloc:
        secrets.append(parts.netloc.rsplit("@", 1)[0])
    secrets += [v for _, v in parse_qsl(parts.query, keep_blank_values=False)]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def check_tracking_uri(uri: str, *, timeout: float = PREFLIGHT_TIMEOUT_S, what: str = "--tracking-uri") -> None:
    """Check, before Ray starts, that ``uri`` can take this search's tracking.

    * ``http(s)://``: an MLflow server must answer its REST API within ``timeout`` seconds
      (``/api/2.0/mlflow/experiments/search``), with the credentials of the URI or of
      ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``;
    * ``sqlite:///``: the database's folder must exist;
    * ``postgresql``/``mysql``/``mssql`` (``+driver`` allowed) and ``databricks``: accepted as
      given (MLflow connects on first use);
    * anything else (``file:``, a bare path, a typo) is refused: MLflow 3 no longer takes the
      file store by default.

    Raises:
        SpecError: naming the URI (credentials hidden), what is wrong and what to do.
    """
    shown = redact_uri(uri)
    scheme = urlsplit(uri).scheme.lower()
    base_scheme = scheme.split("+", 1)[0]
    if base_scheme in _SERVER_SCHEMES:
        _check_server(uri, shown, timeout, what)
    elif base_scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if path and path != ":memory:" and not Path(path).expanduser().parent.is_dir():
            raise SpecError(f"{what} {shown}: the folder {Path(path).parent} does not exist")
    elif base_scheme in _DATABASE_SCHEMES or scheme in _OTHER_SCHEMES:
        return
    else:
        allowed = ", ".join(f"{s}://" for s in _SERVER_SCHEMES + _DATABASE_SCHEMES + _OTHER_SCHEMES)
        hint = ("MLflow 3 refuses the file store; use an MLflow server (http://HOST:PORT) or "
                "sqlite:////absolute/path/mlflow.db" if base_scheme in ("", "file") else "check the spelling")
        raise SpecError(f"{what} {shown}: unsupported scheme {scheme or '(none)'!r}; allowed: {allowed} ({hint})")


def _check_server(uri: str, shown: str, timeout: float, what: str) -> None:
    parts = urlsplit(uri)
    headers = {"Accept": "application/json"}
    user, password = parts.username, parts.password
    user = user or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))
    path = "/api/2.0/mlflow/experiments/search"
    query = f"{parts.query}&max_results=1" if parts.query else "max_results=1"
    url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + path, query, ""))
    request = urllib.request.Request(url, headers=headers)
    start = f"{what} {shown}:"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise SpecError(f"{start} the server refused the credentials (HTTP {err.code}); pass them as "
                            f"MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)") from None
        raise SpecError(f"{start} HTTP {err.code} from {path}: not an MLflow tracking server, or the wrong "
                        f"path prefix") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            why = f"no answer within {timeout:g} s (server hung, or a firewall drops the packets)"
        elif isinstance(reason, ConnectionRefusedError):
            why = f"nothing listens at {parts.hostname}:{parts.port or ''} (connection refused)"
        elif isinstance(reason, socket.gaierror):
            why = f"host {parts.hostname!r} not found"
        else:
            why = scrub(str(reason), uri)
        raise SpecError(f"{start} no MLflow server reachable: {why}. Start one (`mlflow server --host "
                        f"127.0.0.1 --port 5000`), or leave out --tracking-uri to track in the search "
                        f"directory's own store") from None
    try:
        json.loads(body or b"{}")
    except ValueError:
        raise SpecError(f"{start} {base}{path} did not answer JSON: not an MLflow tracking server") from None
