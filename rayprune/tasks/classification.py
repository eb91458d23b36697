"""Task ``classification``: one label (or one score) per sentence or sentence pair.

GLUE, the demo task and any csv/json/parquet/hub data with one or two text columns and a label
column.  ``num_labels == 1`` is regression (STS-B): MSE loss, Pearson / Spearman.  The floor is the
best constant predictor (:func:`rayprune.metrics.constant_floor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rayprune.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, compute_metrics, constant_floor, standard_error
from rayprune.tasks.base import PredictionsSample, Task

__all__ = ["ClassificationTask", "logits_distillation_loss"]


def logits_distillation_loss(student_logits, teacher_logits, temperature: float, *, is_regression: bool = False):
    """Soft-target loss from the dense reference: ``T^2 KL(softmax(t/T) || softmax(s/T))`` averaged
    over the rows (Hinton et al. 2015; the T^2 keeps its gradient scale independent of T), or the
    mean squared difference of the predictions for regression.  Rows are examples
    (classification), tokens (NER) or questions' windows (QA's start and end logits)."""
    import torch

    if is_regression:
        return torch.nn.functional.mse_loss(student_logits.float(), teacher_logits.float())
    log_student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return torch.nn.functional.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature ** 2


@dataclass
class ClassificationTask(Task):
    """Sentence(-pair) classification or regression.

    Attributes:
        classes: outputs of the classifier (1 = regression); ``label_names`` may be unknown
            (integer labels) while ``classes`` is always set.
    """

    kind: ClassVar[str] = "classification"
    auto_model: ClassVar[str] = "AutoModelForSequenceClassification"
    pipeline_tag: ClassVar[str] = "text-classification"
    allowed_metrics: ClassVar[tuple[str, ...]] = CLASSIFICATION_METRICS + REGRESSION_METRICS

    classes: int = 2

    @property
    def num_labels(self) -> int:
        return self.classes

    @property
    def is_regression(self) -> bool:
        return self.classes == 1

    def model_config(self) -> dict:
        config: dict[str, Any] = {
            "num_labels": self.classes,
            "problem_type": "regression" if self.is_regression else "single_label_classification",
        }
        if self.label_names and len(self.label_names) == self.classes:
            config["id2label"] = dict(enumerate(self.label_names))
            config["label2id"] = {name: i for i, name in enumerate(self.label_names)}
        return config

    def tokenize(self, task_data, tokenizer, max_seq_length: int) -> dict:
        from rayprune.data.tokenize import tokenize_sentences

        return {name: tokenize_sentences(getattr(task_data, name), task_data, tokenizer, max_seq_length)
                for name in ("train", "selection", "eval")}

    def logit_rows(self, outputs, batch):
        return [(outputs.logits, batch.get("labels"))]

    def distillation_loss(self, outputs, teacher_outputs, batch, temperature):
        return logits_distillation_loss(outputs.logits, teacher_outputs.logits, temperature,
                                        is_regression=self.is_regression)

    def evaluate(self, model, split, batch_size):
        logits = predict_logits(model, split, batch_size, self)
        return compute_metrics(self.metrics, logits, np.asarray(split.labels), is_regression=self.is_regression)

    def floor(self, metric, data):
        return float(constant_floor(metric, np.asarray(data.eval.labels), is_regression=self.is_regression))

    def floor_description(self):
        return "the best constant predictor on the eval split"

    def standard_error(self, metric, value, n):
        return standard_error(metric, value, n)

    def predictions_sample(self, model, split, *, limit=20, batch_size=32) -> PredictionsSample:
        texts = (split.meta or {}).get("texts") or []
        n = min(limit, len(texts), len(split))
        if n == 0:
            return []
        logits = predict_logits(model, split.subset(np.arange(n)), batch_size, self)
        rows = []
        for i in range(n):
            gold, row = split.labels[i], {"text": texts[i]}
            if self.is_regression:
                row.update(gold=float(gold), predicted=float(np.asarray(logits[i]).reshape(-1)[0]))
            else:
                row.update(gold=self._name(int(gold)), predicted=self._name(int(np.argmax(logits[i]))))
            rows.append(row)
        return rows

    def _name(self, label: int) -> str:
        return self.label_names[label] if self.label_names and label < len(self.label_names) else str(label)

    def card_usage(self, path="<this directory>"):
        return (f"```python\nfrom transformers import pipeline\n"
                f"classify = pipeline({self.pipeline_tag!r}, model={path!r})\n"
                f"classify(\"a sentence to classify\")  # [{{'label': ..., 'score': ...}}]\n```")

    def to_info(self):
        return {**super().to_info(), "num_labels": self.classes, "is_regression": self.is_regression}

    @classmethod
    def from_info(cls, info):
        names = info.get("label_names")
        classes = int(info.get("num_labels") or (len(names) if names else 2))
        metrics = info.get("metrics") or (REGRESSION_METRICS[:1] if classes == 1 else ("accuracy",))
        return cls(metrics=tuple(metrics), label_names=None if names is None else tuple(names),
                   options=cls.check_options(info.get("task_options")), classes=classes)


def predict_logits(model, split, batch_size: int, task: Task) -> np.ndarray:
    """Logits of ``model`` over a tokenized split, in order (``(n, num_labels)``)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for batch in split.batches(batch_size, shuffle=False):
            inputs = {k: v.to(device) for k, v in task.model_inputs(batch).items()}
            out.append(model(**inputs).logits.float().cpu().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 1))
