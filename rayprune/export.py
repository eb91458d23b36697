"""Export the winners of a search: a re-runnable ``config.yaml`` and the pruned model.

For each exported trial, ``<out>/<rank>-<trial_id>/`` holds:

* ``config.yaml``: everything ``rayprune train --config`` needs to re-run the trial alone;
* the pruned model in Hugging Face format (``save_pretrained``: safetensors, masks baked into
  zeros; structured methods save physically smaller matrices) plus the tokenizer;
* ``README.md``: a short model card (task, metric, measured sparsity, the config).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rayprune import measure
from rayprune.models import load_model_and_tokenizer, prunable_targets
from rayprune.search.results import load_search_dir
from rayprune.errors import SpecError
from rayprune.training import TrialConfig, TrialSettings, load_trained

__all__ = ["export_search", "train_config_for"]


def train_config_for(meta: dict, trial_config: dict) -> dict:
    """The ``config.yaml`` that ``rayprune train`` re-runs: model, data, training, trial config."""
    spec = meta["spec"]
    return {
        "model": meta["settings"]["model"],
        "data": spec["data"],
        "data_dir": meta["data"].get("data_dir"),
        "metric": meta["settings"]["metric"],
        "training": {k: v for k, v in meta["settings"].items() if k not in ("model", "metric")},
        "trial": trial_config,
    }


def export_search(search_dir: str | Path, out: str | Path, *, top: int | None = None, log=print) -> list[Path]:
    """Export the Pareto-optimal trials (or the ``top`` K by the objective) of a search."""
    meta, rows, front = load_search_dir(search_dir)
    metric = meta["settings"]["metric"]
    if top is not None:
        complete = [r for r in rows if r["status"] == "complete"]
        chosen = sorted(complete, key=lambda r: float(r[metric]), reverse=True)[:top]
    else:
        chosen = front
    if not chosen:
        raise SpecError(f"{search_dir}: no trial ran its full budget; nothing to export")
    settings = TrialSettings(**meta["settings"])
    out = Path(out)
    written = []
    # The pretrained model as the search started from it: its parameter count is the "dense" one
    # (a method's prepare may already change the structure, e.g. GRAIN's embedding factorisation).
    dense_model, tokenizer = load_model_and_tokenizer(
        settings.model, num_labels=meta["data"]["num_labels"], is_regression=meta["data"]["is_regression"]
    )
    dense_params = measure.count_parameters(dense_model)
    del dense_model
    for rank, row in enumerate(chosen, 1):
        target = out / f"{rank:02d}-{row['trial_id']}"
        target.mkdir(parents=True, exist_ok=True)
        trial_config = json.loads(row["config"])
        config = TrialConfig.from_flat(trial_config, settings)
        if not row["checkpoint"] or not Path(row["checkpoint"]).exists():
            raise SpecError(f"{search_dir}: trial {row['trial_id']} has no checkpoint at {row['checkpoint']!r}")
        model, method = load_trained(Path(row["checkpoint"]), config, settings, meta["data"])
        targets = prunable_targets(model, method.default_scope if method else "encoder_linear")
        sparsity = measure.sparsity(model, targets)
        encoder_sparsity = measure.encoder_sparsity(model)
        if method is not None:
            model = method.finalize()
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        (target / "config.yaml").write_text(yaml.safe_dump(train_config_for(meta, trial_config), sort_keys=False))
        info = {
            "trial_id": row["trial_id"], "method": row["method"], "metric": metric,
            "metric_value": float(row[metric]), "sparsity": sparsity, "sparsity_encoder": encoder_sparsity,
            "parameters": measure.count_parameters(model), "parameters_dense": dense_params,
            "nonzero_parameters": measure.count_parameters(model, nonzero=True),
        }
        (target / "rayprune.json").write_text(json.dumps(info, indent=1))
        (target / "README.md").write_text(_model_card(meta, info, trial_config))
        log(f"exported {row['trial_id']} ({row['method']}, {metric}={float(row[metric]):.4f}, "
            f"sparsity={sparsity:.3f}) -> {target}")
        written.append(target)
    return written


def _model_card(meta: dict, info: dict, trial_config: dict) -> str:
    return f"""---
library_name: transformers
tags: [rayprune, pruning, sparse]
---
# {info['method']} pruned `{meta['settings']['model']}` on {meta['data']['task']}

Exported by rayprune from trial `{info['trial_id']}`.

| | |
|---|---|
| task | {meta['data']['task']} |
| {info['metric']} (eval split) | {info['metric_value']:.4f} |
| measured sparsity (prunable set) | {info['sparsity']:.4f} |
| measured sparsity (all encoder parameters) | {info['sparsity_encoder']:.4f} |
| parameters (dense) | {info['parameters_dense']:,} |
| parameters stored | {info['parameters']:,} |
| non-zero parameters | {info['nonzero_parameters']:,} |

Load it with `AutoModelForSequenceClassification.from_pretrained(<this directory>)`
(structured exports: `import rayprune` first).  Re-run the trial with
`rayprune train --config config.yaml`.

## Configuration
```yaml
{yaml.safe_dump(trial_config, sort_keys=True).strip()}
```
"""
