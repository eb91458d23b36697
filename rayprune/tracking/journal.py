"""The pending-tracking journal: what the driver could not log to MLflow, kept in the search
directory until ``rayprune sync`` (or the end of the search, or a resume) replays it.

One JSON record per line, appended and flushed as it happens, so a driver killed during an
outage loses nothing it had seen.  Records are replayed in order and every record is idempotent
(a run is created only if no run of that trial exists yet; tags, params, end states and
artifacts overwrite; metrics carry their original timestamp, which MLflow deduplicates), so a
replay cut off half-way is simply replayed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["PendingJournal", "JOURNAL_NAME"]

#: The journal's file name inside the search directory.
JOURNAL_NAME = "tracking_pending.jsonl"


class PendingJournal:
    """Append-only list of tracking records at ``<search_dir>/tracking_pending.jsonl``."""

    def __init__(self, search_dir: str | Path) -> None:
        self.path = Path(search_dir) / JOURNAL_NAME

    def append(self, record: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[dict]:
        """The records in the order they were appended; a line cut off by a crash is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def __len__(self) -> int:
        return len(self.records())

    def clear(self) -> None:
        """Remove the journal once every record in it reached MLflow."""
        self.path.unlink(missing_ok=True)
