"""Export the winners of a search: a re-runnable ``config.yaml`` and the pruned model.

For each exported trial, ``<out>/<rank>-<trial_id>/`` holds:

* ``config.yaml``: everything ``rayprune train --config`` needs to re-run the trial alone;
* the pruned model in Hugging Face format (``save_pretrained``: safetensors, masks baked into
  zeros; structured methods save physically smaller matrices) plus the tokenizer;
* ``README.md``: a short model card (task, metric, measured sparsity, the config).

Each entry's ``rayprune.json`` lists the files the export wrote there, so ``--force`` replaces
only those: an ``--out`` that is not empty is refused unless ``--force``, and even then the
user's own files (beside the entries or inside them) stay untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from rayprune import measure
from rayprune.compression import FORMATS, save_model, sparse_card_note
from rayprune.models import load_model_and_tokenizer, prunable_targets
from rayprune.config.trial_file import train_config_for
from rayprune.search.results import checkpoint_directory, load_search_dir
from rayprune.errors import SpecError
from rayprune.methods.masks import gpu_kernel_accepts, layers_left_dense, parse_sparsity_pattern
from rayprune.tasks import task_from_info
from rayprune.training import TrialConfig, TrialSettings, load_trained

__all__ = ["export_search", "train_config_for"]  # train_config_for: re-exported from rayprune.config


EXPORTED_BY = "rayprune export"


def _written_by_export(entry: Path) -> dict | None:
    """The ``rayprune.json`` of an entry an earlier export wrote, else None."""
    try:
        info = json.loads((entry / "rayprune.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("exported_by") == EXPORTED_BY else None


def _listed_file(entry: Path, name) -> Path | None:
    """``entry / name`` when ``name`` (from the entry's ``rayprune.json``) is a relative path
    that stays inside ``entry`` once ``..`` and symbolic links are followed, else None."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    root = entry.resolve()
    parent = (entry / name).parent.resolve()  # the file itself may be a link: it is unlinked, not followed
    if parent != root and root not in parent.parents:
        return None
    return parent / Path(name).name


def _remove_export(entry: Path, info: dict) -> list[str]:
    """Remove what the export listed in ``entry`` (all of it if it never finished) and then
    the directories left empty; files the user added there stay.

    ``rayprune.json`` is read from a directory anyone may have written to, so only files inside
    ``entry`` are removed: a listed name that is absolute, climbs out with ``..`` or through a
    symbolic link, or names a directory is left alone and returned (the caller reports it).
    """
    files = info.get("files")
    if files is None:  # created by an export that failed half-way: nothing in it is the user's
        shutil.rmtree(entry)
        return []
    ignored = []
    for name in files if isinstance(files, list) else [files]:
        path = _listed_file(entry, name)
        if path is None or (path.is_dir() and not path.is_symlink()):
            ignored.append(str(name))
            continue
        path.unlink(missing_ok=True)
    for directory in sorted((p for p in entry.rglob("*") if p.is_dir() and not p.is_symlink()),
                            key=lambda p: len(p.parts), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    if not any(entry.iterdir()):
        entry.rmdir()
    return ignored


def _prepare_out(out: Path, names: list[str], *, force: bool, log=print) -> None:
    """Make ``out`` ready for entries ``names``: refuse a non-empty directory unless ``force``,
    then remove only what earlier exports wrote (each entry's ``rayprune.json`` lists its files;
    names there that lead outside the entry are ignored and reported through ``log``).

    Raises:
        SpecError: ``out`` is a file; not empty without ``force``; or a new entry's name is taken
            by something rayprune did not write.
    """
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: is a file, not a directory")
    present = sorted(out.iterdir()) if out.exists() else []
    if not present:
        return
    if not force:
        shown = ", ".join(p.name for p in present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise SpecError(f"--out {out}: directory is not empty ({shown}); export into an empty or new "
                        f"directory, or add --force to replace what an earlier rayprune export wrote there "
                        f"(other files are kept)")
    # A link to a directory is never an entry of ours: what it lists would be removed elsewhere.
    ours = {p: info for p in present if p.is_dir() and not p.is_symlink()
            and (info := _written_by_export(p)) is not None}
    clashes = sorted(p.name for p in present if p.name in names and p not in ours)
    if clashes:
        raise SpecError(f"--out {out}: {', '.join(clashes)} exists and was not written by rayprune export; "
                        f"move it away or export elsewhere")
    for entry, info in ours.items():
        ignored = _remove_export(entry, info)
        if ignored:
            log(f"warning: {entry / 'rayprune.json'} lists {len(ignored)} path(s) outside its entry, left alone: "
                f"{', '.join(ignored[:5])}" + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""))


def export_search(search_dir: str | Path, out: str | Path, *, top: int | None = None, force: bool = False,
                  weights_format: str = "dense", log=print) -> list[Path]:
    """Export the Pareto-optimal trials (or the ``top`` K by the objective) of a search.

    ``force`` allows a non-empty ``out`` and first removes what earlier exports wrote there
    (listed in each entry's ``rayprune.json``); nothing else in ``out`` is touched.
    ``weights_format`` is ``dense`` (``model.safetensors``, what every runtime reads) or
    ``sparse`` (zeros stored as a bitmask, loaded with ``rayprune.compression.load_sparse``).
    """
    if weights_format not in FORMATS:
        raise SpecError(f"--format {weights_format!r}: allowed: {', '.join(FORMATS)}")
    meta, rows, front = load_search_dir(search_dir)
    metric = meta["settings"]["metric"]
    if top is not None:
        # Among full-budget trials judged ok only: collapsed (not above the floor), infeasible
        # and failed ones are never exported.  Directories from before verdicts hold none.
        usable = [r for r in rows if r["status"] == "complete" and r.get("verdict", "ok") == "ok"]
        chosen = sorted(usable, key=lambda r: float(r[metric]), reverse=True)[:top]
    else:
        chosen = front
    if not chosen:
        raise SpecError(f"{search_dir}: no trial ran its full budget clearly above the floor and within the "
                        f"constraints (see the verdict column of results.csv); nothing to export")
    settings = TrialSettings(**meta["settings"])
    out = Path(out)
    _prepare_out(out, [f"{rank:02d}-{row['trial_id']}" for rank, row in enumerate(chosen, 1)], force=force,
                 log=log)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    # The pretrained model as the search started from it: its parameter count is the "dense" one
    # (a method's prepare may already change the structure, e.g. GRAIN's embedding factorisation).
    remote_code = settings.trust_remote_code  # search.json's settings; False for older searches
    task = task_from_info(meta["data"])
    dense_model, tokenizer = load_model_and_tokenizer(settings.model, task=task, trust_remote_code=remote_code)
    dense_params = measure.count_parameters(dense_model)
    del dense_model
    for rank, row in enumerate(chosen, 1):
        target = out / f"{rank:02d}-{row['trial_id']}"
        target.mkdir(parents=True, exist_ok=True)
        users_files = {p for p in target.rglob("*") if p.is_file()}  # kept from an earlier entry
        if not users_files:  # marked before it is filled: an entry that fails half-way is still ours
            (target / "rayprune.json").write_text(json.dumps({"exported_by": EXPORTED_BY}))
        trial_config = json.loads(row["config"])
        config = TrialConfig.from_flat(trial_config, settings)
        with checkpoint_directory(search_dir, row, meta) as checkpoint_dir:
            model, method = load_trained(checkpoint_dir, config, settings, meta["data"])
        targets = prunable_targets(model, method.default_scope if method else "encoder_linear")
        sparsity = measure.sparsity(model, targets)
        pattern = str(trial_config.get(f"{row['method']}.sparsity_pattern", "unstructured"))
        named = dict(model.named_parameters())
        left_dense = layers_left_dense({t: tuple(named[t].shape) for t in targets if t in named}, pattern)
        encoder_sparsity = measure.encoder_sparsity(model)
        if method is not None:
            model = method.finalize()
        save_model(model, target, weights_format=weights_format)
        tokenizer.save_pretrained(target)
        (target / "config.yaml").write_text(yaml.safe_dump(train_config_for(meta, trial_config), sort_keys=False))
        criteria = meta.get("criteria") or {}
        info = {
            "trial_id": row["trial_id"], "method": row["method"], "metric": metric,
            "metric_value": float(row[metric]), "task_type": task.kind, "pipeline_tag": task.pipeline_tag,
            "reference_metric": criteria.get("reference_metric"), "floor": criteria.get("floor"),
            "retained": _float_or_none(row.get("retained")),
            "sparsity": sparsity, "sparsity_encoder": encoder_sparsity,
            "sparsity_pattern": pattern, "layers_left_dense": left_dense,
            "parameters": measure.count_parameters(model), "parameters_dense": dense_params,
            "nonzero_parameters": measure.count_parameters(model, nonzero=True),
            "trust_remote_code": remote_code,
        }
        (target / "README.md").write_text(_model_card(meta, info, trial_config, task)
                                          + sparse_card_note(weights_format, task.auto_model))
        # Last: the list of what this export wrote, all that a later --force may remove.
        info["exported_by"] = EXPORTED_BY
        info["files"] = sorted({str(p.relative_to(target)) for p in target.rglob("*")
                                if p.is_file() and p not in users_files} | {"rayprune.json"})
        (target / "rayprune.json").write_text(json.dumps(info, indent=1))
        log(f"exported {row['trial_id']} ({row['method']}, {metric}={float(row[metric]):.4f}, "
            f"sparsity={sparsity:.3f}) -> {target}")
        written.append(target)
    return written


def _remote_code_note(info: dict) -> str:
    if not info.get("trust_remote_code"):
        return ""
    return ("\n\n**The search ran with `trust_remote_code: true`**: the model's own Python code was "
            "executed; loading it needs `trust_remote_code=True` too, so read that code first.")


def _pattern_note(info: dict) -> str:
    """The card's paragraph on the sparsity pattern: N:M exports say which GPU kernel takes them
    and which layers kept their dense shape (they are not in the pattern)."""
    pattern = info.get("sparsity_pattern", "unstructured")
    nm = parse_sparsity_pattern(pattern)
    if nm is None:
        return ""
    kernel = ("runs on NVIDIA's semi-structured (2:4) kernels, compute capability >= 8.0, through "
              "`torch.sparse.to_sparse_semi_structured`" if gpu_kernel_accepts(*nm)
              else "is a mask pattern only: no GPU kernel runs it (only 2:4 and patterns inside it do)")
    lines = [f"**Sparsity pattern {pattern}**: every group of {nm[1]} consecutive input weights of the pruned "
             f"linears keeps at most {nm[0]} non-zeros; this pattern {kernel}."]
    dense = info.get("layers_left_dense") or {}
    if dense:
        lines.append("Layers left dense (their shapes do not fit the pattern or the kernel):")
        lines += [f"- `{fqn}`: {reason}" for fqn, reason in sorted(dense.items())]
    return "\n".join(lines) + "\n\n"


def _float_or_none(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value else None


def _number(value, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(float(value), fmt)


def _model_card(meta: dict, info: dict, trial_config: dict, task) -> str:
    metric = info["metric"]
    return f"""---
library_name: transformers
pipeline_tag: {task.pipeline_tag}
tags: [rayprune, pruning, sparse]
---
# {info['method']} pruned `{meta['settings']['model']}` on {meta['data']['task']}

Exported by rayprune from trial `{info['trial_id']}`.

| | |
|---|---|
| task | {meta['data']['task']} ({task.kind}) |
| {metric} (eval split) | {info['metric_value']:.4f} |
| {metric} of the dense reference | {_number(info.get('reference_metric'))} |
| {metric} of the floor ({task.floor_description()}) | {_number(info.get('floor'))} |
| retained ({metric} / the reference's) | {_number(info.get('retained'))} |
| measured sparsity (prunable set) | {info['sparsity']:.4f} |
| measured sparsity (all encoder parameters) | {info['sparsity_encoder']:.4f} |
| parameters (dense) | {info['parameters_dense']:,} |
| parameters stored | {info['parameters']:,} |
| non-zero parameters | {info['nonzero_parameters']:,} |

{_pattern_note(info)}Weights are in `model.safetensors` (no pickle).{_remote_code_note(info)}

Load it with `{task.auto_model}.from_pretrained(<this directory>)`
(structured exports: `import rayprune` first), or in a pipeline:

{task.card_usage()}

Re-run the trial with `rayprune train --config config.yaml`.

## Configuration
```yaml
{yaml.safe_dump(trial_config, sort_keys=True).strip()}
```
"""
