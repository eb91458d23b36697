"""The :class:`Task` base: everything that differs between model heads, in one object.

A task instance is the *configured* task of one search (its metrics, label names, options).  It is
built by the data layer once the data is loaded (:func:`rayprune.data.load_task`), travels inside
the tokenized data to every trial (it pickles small: names and numbers, no tokenizer, no model),
and is rebuilt from ``search.json`` for the export (:meth:`Task.to_info` / :meth:`Task.from_info`).

Who calls what, and when:

========================== ======================================================================
``model_config()``          loading the pretrained model or the dense reference (AutoConfig kwargs)
``model_class()``           the same: the Auto class (``AutoModelFor...``) for this head
``check_options()``         ``DataSpec`` construction (the space file's validation, no torch)
``finalize()``              the data layer, once the source has read the raw rows
``tokenize()``              the driver's preflight, once per search
``model_inputs()``          every forward without labels (teacher, evaluation, calibration)
``loss()``                  every training step (the method may replace it: ``task_loss``)
``distillation_loss()``     every training step that distils from the dense reference
``evaluate()``              every evaluation (trial, reference, selection split)
``floor()``                 the driver, once, before any trial (what a model with no skill scores)
``standard_error()``        judging a trial: is it *clearly* above the floor?
``predictions_sample()``    the front members' runs in MLflow (what a pruned model gets wrong)
``card_usage()``            the export's model card
========================== ======================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Task", "PredictionsSample"]

#: A short table of eval examples with the gold answer and the model's, for a human to read.
PredictionsSample = list[dict[str, Any]]


@dataclass
class Task:
    """Base of every task.  Subclasses set the class attributes and implement the abstract
    methods; the defaults fit Hugging Face heads whose forward returns ``loss`` when given the
    task's target keys.

    Class attributes:
        kind: registry key (``data.task_type`` in the space file).
        auto_model: name of the ``transformers`` Auto class for this head.
        pipeline_tag: the Hugging Face ``pipeline(...)`` task an export serves.
        target_keys: batch keys that are training targets, not model inputs.
        allowed_metrics: metric names this task computes; the first is the default primary.

    Attributes:
        metrics: the chosen metrics, first = the search's objective by default.
        label_names: class / tag names in id order (``None`` where the head has none, QA).
        options: the task's own options (``data.task_options``), validated by
            :meth:`check_options`.
    """

    kind: ClassVar[str] = ""
    auto_model: ClassVar[str] = ""
    pipeline_tag: ClassVar[str] = ""
    target_keys: ClassVar[tuple[str, ...]] = ("labels",)
    allowed_metrics: ClassVar[tuple[str, ...]] = ()

    metrics: tuple[str, ...] = ()
    label_names: tuple[str, ...] | None = None
    options: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ options (no torch)

    @classmethod
    def check_options(cls, options: dict | None) -> dict:
        """Validate ``data.task_options`` and return them with defaults filled in.

        Called when the space file is read, before anything is loaded.  The base accepts none.

        Raises:
            ValueError: an unknown key or a bad value (the message names both and what is allowed).
        """
        options = dict(options or {})
        if options:
            raise ValueError(f"data.task_options: task type {cls.kind!r} takes no options, got {sorted(options)}")
        return options

    # ------------------------------------------------------------------ the head

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        """Outputs of the head per position (classes, tags; 2 for QA's start/end)."""
        return len(self.label_names) if self.label_names else 2

    @property
    def is_regression(self) -> bool:
        """Only classification's ``num_labels == 1`` regresses; methods read it to skip KD."""
        return False

    def model_class(self) -> Any:
        """The ``transformers`` Auto class that builds this head."""
        import transformers

        return getattr(transformers, self.auto_model)

    def model_config(self) -> dict:
        """Keyword arguments for ``AutoConfig.from_pretrained``: head size and label names, so the
        saved ``config.json`` answers with names (``id2label``) in every client."""
        if not self.label_names:
            return {}
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: i for i, name in enumerate(self.label_names)},
        }

    # ------------------------------------------------------------------ data

    @classmethod
    def load(cls, spec, data_dir: str | None):  # pragma: no cover
        """Read the data a :class:`~rayprune.data.DataSpec` of this task type names (its files in
        the task's formats, or a hub dataset through ``datasets``), validate and repair the rows,
        carve eval (``spec.eval_fraction``), subsample, carve the selection split, and return a
        :class:`~rayprune.data.TaskData` whose ``task`` is an instance of ``cls``.

        Called by the ``files`` and ``hub`` sources for every task type but classification, once
        per search on the driver.  Errors are ``ValueError`` naming the file, line and what is
        allowed."""
        raise NotImplementedError

    def tokenize(self, task_data, tokenizer, max_seq_length: int) -> dict:  # pragma: no cover
        """Tokenize the train / selection / eval splits once per search.

        Returns:
            ``{"train": TokenizedSplit, "selection": ..., "eval": ...}``.
        """
        raise NotImplementedError

    def model_inputs(self, batch: dict) -> dict:
        """The batch without its targets: what a forward that must not compute a loss takes."""
        return {k: v for k, v in batch.items() if k not in self.target_keys}

    # ------------------------------------------------------------------ training

    def loss(self, outputs: Any, batch: dict) -> "torch.Tensor":
        """The task loss of one training batch; Hugging Face heads compute it when given the
        targets (cross-entropy over classes, tags, or start and end positions)."""
        return outputs.loss

    def logit_rows(self, outputs: Any, batch: dict) -> list[tuple["torch.Tensor", "torch.Tensor | None"]]:
        """The head's outputs as classification problems: a list of ``(logits (rows, classes),
        labels (rows,) or None)``.  Classification: one row per example; QA: the start logits and
        the end logits (one row per window, over its positions); NER: one row per token that
        carries a label.  Distilling methods (GRAIN's soft targets, PINS' self-distillation)
        work on these rows, so they run on every task without naming one.  The rows of a
        teacher's outputs are taken with the same ``batch``, so they line up."""
        raise NotImplementedError(f"{type(self).__name__} must implement logit_rows(outputs, batch)")

    def distillation_loss(self, outputs: Any, teacher_outputs: Any, batch: dict,
                          temperature: float) -> "torch.Tensor":
        """Soft-target loss of the student's outputs against the dense reference's: the mean over
        :meth:`logit_rows`' problems of ``T^2 KL(teacher || student)`` per row (Hinton et al.)."""
        from rayprune.tasks.classification import logits_distillation_loss

        pairs = zip(self.logit_rows(outputs, batch), self.logit_rows(teacher_outputs, batch))
        losses = [logits_distillation_loss(s, t.detach(), temperature) for (s, _), (t, _) in pairs if s.shape[0]]
        if not losses:  # no labelled token in the batch (NER): nothing to match
            return outputs.loss * 0.0 if getattr(outputs, "loss", None) is not None else None
        return sum(losses) / len(losses)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model: "nn.Module", split, batch_size: int) -> dict[str, float]:  # pragma: no cover
        """Every metric in :attr:`metrics` of ``model`` on ``split`` (a ``TokenizedSplit``)."""
        raise NotImplementedError

    def floor(self, metric: str, data) -> float:  # pragma: no cover
        """What a predictor with no skill scores on ``data.eval`` (``data`` is the
        ``TokenizedTask``; a floor may learn from ``data.train``, as CoNLL's baseline does)."""
        raise NotImplementedError

    def floor_description(self) -> str:
        """One line for the CLI, the parent run and the plots: what the floor is."""
        return "the floor"

    def eval_size(self, split) -> int:
        """How many independent units a metric on ``split`` averages over (examples, questions,
        sentences): the ``n`` of its standard error."""
        return len(split)

    def standard_error(self, metric: str, value: float, n: int) -> float:
        """Approximate standard error of a proportion-like metric in [0, 1] measured on ``n``
        units: ``sqrt(v (1 - v) / n)``.  Tasks with correlations override it."""
        if n < 2 or not math.isfinite(value):
            return float("inf")
        v = min(max(float(value), 0.0), 1.0)
        return math.sqrt(v * (1.0 - v) / n)

    def predictions_sample(self, model: "nn.Module", split, *, limit: int = 20,
                           batch_size: int = 32) -> PredictionsSample:
        """A few eval examples with the gold answer and the model's, as rows of a table."""
        return []

    # ------------------------------------------------------------------ export

    def card_usage(self, path: str = "<this directory>") -> str:
        """Markdown lines for the model card: how to load and call the export."""
        return (f"```python\nfrom transformers import pipeline\n"
                f"pipe = pipeline({self.pipeline_tag!r}, model={path!r})\n```")

    def to_info(self) -> dict:
        """What ``search.json`` records to rebuild the task (JSON types only)."""
        return {"task_type": self.kind, "metrics": list(self.metrics),
                "label_names": None if self.label_names is None else list(self.label_names),
                "task_options": dict(self.options)}

    @classmethod
    def from_info(cls, info: dict) -> "Task":
        """Inverse of :meth:`to_info`."""
        names = info.get("label_names")
        return cls(metrics=tuple(info.get("metrics") or cls.allowed_metrics[:1]),
                   label_names=None if names is None else tuple(names),
                   options=cls.check_options(info.get("task_options")))


def mean_or_nan(values: Sequence[float]) -> float:
    """Mean of ``values``; NaN for none (a metric of nothing is not 0)."""
    return float(sum(values) / len(values)) if values else float("nan")
