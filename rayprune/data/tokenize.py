"""Tokenisation and batching: a :class:`TaskData` becomes padded numpy arrays once per search,
and every trial cuts model-ready batches from them.

Arrays, not tensors, so the task pickles small into Ray's object store; torch is imported only
when :meth:`TokenizedSplit.batches` builds the first batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from rayprune.data.spec import TaskData

if TYPE_CHECKING:
    import torch

__all__ = ["TokenizedSplit", "TokenizedTask", "tokenize_task"]


@dataclass
class TokenizedSplit:
    """One split as right-padded numpy arrays (picklable; no tokenizer inside).

    Attributes:
        input_ids: ``(n, L)`` int32 token ids, padded to the split's longest example.
        attention_mask: ``(n, L)`` int8, 1 on real tokens.
        token_type_ids: ``(n, L)`` int8 segment ids for sentence pairs, else ``None``.
        labels: the ``labels`` batch key: ``(n,)`` int64 class ids or float32 regression
            targets (classification), ``(n, L)`` int64 tag ids with -100 where no word starts
            (token classification); ``None`` for tasks whose targets are elsewhere (QA).
        targets: further per-row batch keys (QA's ``start_positions`` / ``end_positions``); a
            ``(n, L)`` array is cut to each batch's width like the inputs.
        meta: what the task needs to read predictions back, never batched (QA: the windows'
            examples and offsets; NER: word ids; classification: a few texts to show).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    labels: np.ndarray | None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    meta: Any = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def lengths(self) -> np.ndarray:
        """Real (unpadded) length of each example, ``(n,)``."""
        return self.attention_mask.sum(axis=1).astype(np.int64)

    def batches(
        self, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of model-ready batches, each cut to its own longest sequence.

        Trimming the padding per batch (dynamic padding) makes short-sentence tasks much
        faster on CPU than padding everything to ``max_seq_length``.

        Args:
            batch_size: examples per batch.
            shuffle: visit examples in a seeded random order (training) or in order (eval).
            seed: the order's seed; use a different one per epoch.
            drop_last: skip the final smaller batch.

        Yields:
            ``input_ids``, ``attention_mask``, (``token_type_ids``) as int64 ``(b, l)`` tensors
            and ``labels`` as int64 (classification) or float32 (regression) ``(b,)``.
        """
        import torch

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got batch_size={batch_size!r}")
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        lengths = self.lengths()
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            width = max(int(lengths[idx].max()), 1)
            # Rows are right-padded, so the first `width` columns hold every real token.
            batch = {
                "input_ids": torch.from_numpy(self.input_ids[idx, :width].astype(np.int64)),
                "attention_mask": torch.from_numpy(
                    self.attention_mask[idx, :width].astype(np.int64)
                ),
            }
            if self.token_type_ids is not None:
                batch["token_type_ids"] = torch.from_numpy(
                    self.token_type_ids[idx, :width].astype(np.int64)
                )
            for key, values in self._batch_targets():
                rows = values[idx]
                # A column slice is a strided view; Hugging Face heads .view() their labels.
                batch[key] = torch.from_numpy(np.ascontiguousarray(rows[:, :width]) if rows.ndim == 2 else rows)
            yield batch

    def _batch_targets(self):
        if self.labels is not None:
            yield "labels", self.labels
        yield from self.targets.items()

    def subset(self, idx) -> "TokenizedSplit":
        """The rows at ``idx`` (indices or a boolean mask), as a new split.  ``meta`` is kept as
        it is: tasks whose meta is per row (QA, NER) subset it themselves."""
        idx = np.asarray(idx)
        return TokenizedSplit(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[idx],
            labels=None if self.labels is None else self.labels[idx],
            targets={k: v[idx] for k, v in self.targets.items()},
            meta=self.meta,
        )


@dataclass
class TokenizedTask:
    """A task ready for training: what the driver puts in Ray's object store for every trial.

    Attributes:
        task: the configured :class:`~rayprune.tasks.base.Task` (head, metrics, floor, ...).
        unlabeled_texts: one string per training example (a pair joined by a space, a question
            and its context, a sentence's words), for masked-language-model stages that need
            raw text.
    """

    name: str
    train: TokenizedSplit
    selection: TokenizedSplit
    eval: TokenizedSplit
    task: Any
    unlabeled_texts: list[str] = field(default_factory=list)
    max_seq_length: int = 128

    @property
    def primary_metric(self) -> str:
        return self.task.metrics[0]

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.task.metrics)

    @property
    def num_labels(self) -> int:
        return self.task.num_labels

    @property
    def is_regression(self) -> bool:
        return self.task.is_regression

    @property
    def label_names(self) -> tuple[str, ...] | None:
        return self.task.label_names


#: How many eval texts a classification split keeps for the predictions sample shown in MLflow.
SAMPLE_TEXTS = 20


def tokenize_sentences(
    examples: list[dict], task: TaskData, tokenizer: Any, max_seq_length: int
) -> TokenizedSplit:
    """One classification split: one or two text columns per example, one label."""
    label_dtype = np.float32 if task.is_regression else np.int64
    labels = np.asarray([ex[task.label_field] for ex in examples], dtype=label_dtype)
    pair = len(task.text_fields) == 2
    if not examples:
        empty = np.zeros((0, 0), dtype=np.int32)
        return TokenizedSplit(
            input_ids=empty,
            attention_mask=empty.astype(np.int8),
            token_type_ids=empty.astype(np.int8) if pair else None,
            labels=labels,
        )
    first = [ex[task.text_fields[0]] for ex in examples]
    second = [ex[task.text_fields[1]] for ex in examples] if pair else None
    # Unpadded batch call (fast tokenizers run it in Rust); we pad to the right ourselves so
    # per-batch trimming in `batches` is valid whatever the tokenizer's padding_side.
    enc = tokenizer(first, second, truncation=True, max_length=max_seq_length)
    ids = enc["input_ids"]
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), tokenizer.pad_token_id, dtype=np.int32)
    attention = np.zeros((len(ids), width), dtype=np.int8)
    types = enc.get("token_type_ids") if pair else None
    token_types = np.zeros((len(ids), width), dtype=np.int8) if types is not None else None
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
        if token_types is not None:
            token_types[i, : len(row)] = types[i]
    texts = [" / ".join(str(ex[f]) for f in task.text_fields) for ex in examples[:SAMPLE_TEXTS]]
    return TokenizedSplit(
        input_ids=input_ids, attention_mask=attention, token_type_ids=token_types, labels=labels,
        meta={"texts": texts},
    )


def _as_text(value: Any) -> str:
    """A text column's value as running text (NER's word lists are joined by spaces)."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def tokenize_task(
    task: TaskData, tokenizer: Any, *, max_seq_length: int | None = None
) -> TokenizedTask:
    """Tokenize every split of ``task`` once, for all trials of a search (its task decides how:
    :meth:`rayprune.tasks.base.Task.tokenize`).

    Classification: sentence pairs are encoded as pairs (``[CLS] a [SEP] b [SEP]`` for BERT) with
    ``longest_first`` truncation.  Single-sentence tasks carry no ``token_type_ids`` (they would
    all be 0, which is the model's default).

    Args:
        task: loaded data (:func:`load_task`, :func:`make_demo_task`).
        tokenizer: a Hugging Face tokenizer (fast recommended).
        max_seq_length: longest sequence kept, in tokens, special tokens included; default:
            the task's (its DataSpec's ``max_seq_length``, 128 unless set).

    Raises:
        ValueError: ``max_seq_length`` < 2, or a tokenizer without a pad token.
    """
    if max_seq_length is None:
        max_seq_length = task.max_seq_length
    if not isinstance(max_seq_length, int) or max_seq_length < 2:
        raise ValueError(
            f"max_seq_length must be an int >= 2, got max_seq_length={max_seq_length!r}"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no pad token; set one, e.g. "
            "tokenizer.pad_token = tokenizer.eos_token"
        )
    splits = task.task.tokenize(task, tokenizer, max_seq_length)
    return TokenizedTask(
        name=task.name,
        **splits,
        task=task.task,
        unlabeled_texts=[" ".join(_as_text(ex[f]) for f in task.text_fields) for ex in task.train],
        max_seq_length=max_seq_length,
    )
