"""What a pruned model gets wrong, for a human to read: each front member's predictions sample.

After the front is known, the driver reloads every front member from its final checkpoint (as
``rayprune export`` does), asks the task for a few eval examples with the gold answer and the
model's (:meth:`rayprune.tasks.base.Task.predictions_sample`: QA questions with their answers,
NER sentences with their entities, classification texts with their labels) and logs them as a
table on the member's MLflow run (``predictions_sample.json``).  Best effort: a member whose
checkpoint cannot be read gets a warning line, never a failed search.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["log_prediction_samples", "SAMPLE_ARTIFACT"]

SAMPLE_ARTIFACT = "predictions_sample.json"


def log_prediction_samples(tracker, front_rows: list[dict], settings, data, search_dir: Path, *, log=print) -> int:
    """Log the predictions sample of every front member; returns how many were logged."""
    from rayprune.search.results import checkpoint_directory
    from rayprune.training import TrialConfig, load_trained

    meta_file = Path(search_dir) / "search.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return 0
    logged = 0
    for row in front_rows:
        try:
            config = TrialConfig.from_flat(json.loads(row["config"]), settings)
            with checkpoint_directory(search_dir, row, meta) as checkpoint:
                model, _ = load_trained(checkpoint, config, settings, meta["data"])
            rows = data.task.predictions_sample(model, data.eval, batch_size=settings.eval_batch_size)
        except Exception as err:  # noqa: BLE001 - a sample is a convenience, never a reason to fail
            log(f"warning: no predictions sample for trial {row.get('trial_id')}: {type(err).__name__}: {err}")
            continue
        tracker.log_trial_table(row["trial_id"], SAMPLE_ARTIFACT, rows)
        logged += 1
    return logged
