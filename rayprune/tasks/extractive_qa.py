"""Task ``extractive_qa``: answer a question with a span of its context (SQuAD v1.1).

Data (:meth:`ExtractiveQATask.load`):

- SQuAD v1.1 JSON files (``{"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}``)
  as ``train_files`` / ``eval_files``;
- Hugging Face ``datasets`` files (jsonl, json records, parquet) or a hub dataset with the columns
  ``question``, ``context`` and ``answers`` (``{"text": [...], "answer_start": [...]}``, or a list
  of ``{"text", "answer_start"}``), ``id`` and ``title`` when present; ``task: squad`` alone, or
  ``dataset: rajpurkar/squad``, loads the hub's SQuAD v1.1 (online only);
- ``eval_fraction`` + ``group_field: title`` carves eval out of one file by article
  (:mod:`rayprune.data.splits`), since only SQuAD's dev file can be had offline.

Repairs, stated in ``TaskData.notes`` (one line each, shown by the CLI and on the parent run):

- an ``answer_start`` that does not point at its answer text is moved to the occurrence of the
  text in the context nearest to it (real SQuAD-style data has offsets off by a few characters);
  an answer whose text does not occur in its context at all is dropped from train (it cannot be
  labelled) and kept as a gold text in eval (the metric reads only the text);
- a question without answers (SQuAD 2.0's unanswerable ones, or an empty ``answers``) is dropped
  and counted, in train and in eval alike: v1.1's metric has no "no answer" and the model here
  never predicts one, so scoring such a question would only measure that convention;
- bytes that are not UTF-8 stop the load with one error naming the file.

Tokenisation (:meth:`ExtractiveQATask.tokenize`), as the SQuAD reference scripts do it, written
here: question first, then the context cut into windows of ``max_seq_length`` tokens that overlap
by ``doc_stride`` (``truncation="only_second"``, ``return_overflowing_tokens``,
``return_offsets_mapping`` of a fast tokenizer).  A window is labelled with the answer's first and
last token, or with ``(0, 0)`` (the CLS token) when the answer is not wholly inside it.  A question
too long to leave the context a window wider than ``doc_stride`` is cut to fit (counted in the
split's ``meta``).

Post-processing (:func:`best_spans`): per window the ``n_best_size`` highest start and end logits
over context tokens, spans with start <= end and at most ``max_answer_length`` tokens, scored by
start + end logit; the best span over all of a question's windows, mapped back to the context's
characters through the offsets.  No valid span gives the empty answer.

Metrics (:func:`squad_scores`): ``exact_match`` and ``f1`` with the semantics of the official
SQuAD v1.1 evaluation script (lower case, punctuation removed, the articles a/an/the removed,
whitespace collapsed; token-overlap F1; each question scores its best gold answer), in [0, 1]
like every rayprune metric (the script reports x100).  Written by hand: the ``evaluate``
package downloads its metric scripts at first use, which fails offline.

Floor (:meth:`ExtractiveQATask.floor`): the best *fixed-position span*: the answer "words i to
i + k - 1 of the context" with the same (i, k) for every question (i < 10, k <= 5), chosen on the
train split for the metric and scored on eval.  It is what a predictor that reads neither the
question nor the context can score (it only knows where answers tend to sit); it costs one pass
over the words, no model.  Typically a few points of F1 and about 0 exact match: a pruned model at
the floor has lost the task.  ``eval_size`` is the number of questions, not windows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from rayprune.tasks.base import PredictionsSample, Task
from rayprune.tasks.squad_metric import (  # noqa: F401 - re-exported: the task's metric
    exact_match_score, f1_score, normalize_answer, squad_scores, token_f1,
)

__all__ = ["ExtractiveQATask", "normalize_answer", "exact_match_score", "f1_score", "squad_scores",
           "best_spans", "repair_answer_start", "QA_OPTIONS"]

#: The task's options (``data.task_options``) and their defaults.  ``doc_stride`` ``None`` means
#: ``max_seq_length // 3`` (128 at the reference 384), so the preset works at any window length.
QA_OPTIONS: dict[str, Any] = {"doc_stride": None, "max_answer_length": 30, "n_best_size": 20}

#: The hub dataset ``task: squad`` loads when no files are given.
SQUAD_HUB_NAME = "rajpurkar/squad"
#: The fixed-position floor's grid: spans start at context word i < FLOOR_MAX_START, k <= FLOOR_MAX_WORDS.
FLOOR_MAX_START, FLOOR_MAX_WORDS = 10, 5
#: Questions of the train split the floor's span is chosen on (a seeded-free prefix: the first ones).
FLOOR_CHOICE_QUESTIONS = 2000
#: Questions tokenised per call of the tokenizer (bounds the peak memory of its Python lists).
TOKENIZE_CHUNK = 1000
#: Eval questions in the predictions sample.
SAMPLE_QUESTIONS = 20


# ====================================================================================== reading


def repair_answer_start(context: str, text: str, start: int | None) -> int | None:
    """Where ``text`` starts in ``context``: ``start`` when it points at the text, else the
    occurrence of the text nearest to ``start`` (first one when ``start`` is unknown); ``None``
    when the text does not occur."""
    if start is not None and 0 <= start and context[start:start + len(text)] == text:
        return start
    if not text:
        return None
    found, pos = [], context.find(text)
    while pos != -1:
        found.append(pos)
        pos = context.find(text, pos + 1)
    if not found:
        return None
    target = 0 if start is None else start
    return min(found, key=lambda p: (abs(p - target), p))


def _read_text(path: str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: data file not found: {path!r}")
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what}: {path!r} is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset "
                         f"{err.start} cannot be decoded; re-save the file as UTF-8") from None


def _squad_json_rows(doc: dict, path: str, what: str) -> list[dict]:
    """Rows of a SQuAD-format document (articles -> paragraphs -> qas)."""
    rows = []
    articles = doc.get("data")
    if not isinstance(articles, list):
        raise ValueError(f"{what}: {path!r}: 'data' must be a list of articles (SQuAD v1.1 format)")
    for a, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise ValueError(f"{what}: {path!r}: data[{a}] must be an article with a 'paragraphs' list")
        title = article.get("title")
        for p, paragraph in enumerate(article["paragraphs"]):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise ValueError(f"{what}: {path!r}: data[{a}].paragraphs[{p}] needs 'context' and a 'qas' list")
            context = paragraph.get("context")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise ValueError(f"{what}: {path!r}: data[{a}].paragraphs[{p}].qas[{q}] must be an object")
                rows.append({"id": qa.get("id", f"{Path(path).stem}-{a}-{p}-{q}"), "title": title,
                             "question": qa.get("question"), "context": context,
                             "answers": qa.get("answers") or [], "is_impossible": bool(qa.get("is_impossible"))})
    return rows


def _answers_list(answers: Any) -> list[tuple[str, int | None]]:
    """``{"text": [...], "answer_start": [...]}`` or ``[{"text", "answer_start"}]`` -> pairs."""
    if answers is None:
        return []
    if isinstance(answers, dict):
        texts = list(answers.get("text") or [])
        starts = list(answers.get("answer_start") or [])
        starts += [None] * (len(texts) - len(starts))
        pairs = zip(texts, starts)
    elif isinstance(answers, (list, tuple)):
        pairs = [(a.get("text"), a.get("answer_start")) if isinstance(a, dict) else (a, None) for a in answers]
    else:
        raise ValueError(f"answers must be {{'text': [...], 'answer_start': [...]}} or a list of "
                         f"{{'text', 'answer_start'}}, got {type(answers).__name__}")
    out = []
    for text, start in pairs:
        if text is None:
            continue
        out.append((str(text), None if start is None else int(start)))
    return out


def _record_rows(records: list[dict], columns: Sequence[str], where: str) -> list[dict]:
    from rayprune.data.labels import missing_column

    for c in ("question", "context", "answers"):
        if c not in columns:
            raise missing_column(c, list(columns), where)
    rows = []
    for i, r in enumerate(records):
        row = dict(r)
        row.setdefault("id", f"row-{i}")
        row.setdefault("title", None)
        rows.append(row)
    return rows


def _read_files(files: Sequence[str], what: str) -> list[dict]:
    """Rows of ``train_files`` / ``eval_files``: SQuAD JSON documents, JSON lists of records, or
    anything ``datasets`` reads (jsonl, parquet)."""
    from rayprune.data.sources.files import read_data_files

    rows: list[dict] = []
    others = []
    for path in files:
        if Path(path).suffix.lower() != ".json":
            others.append(path)
            continue
        text = _read_text(path, what)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:  # JSON lines under a .json name: `datasets` reads it
            others.append(path)
            continue
        if isinstance(doc, dict) and "data" in doc:
            rows.extend(_squad_json_rows(doc, path, what))
        elif isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
            rows.extend(_record_rows(doc, sorted({k for r in doc for k in r}), f"{what} {path!r}"))
        else:
            raise ValueError(f"{what}: {path!r} is neither a SQuAD file ({{'data': [articles]}}) nor a list of "
                             f"records with question/context/answers")
    if others:
        for path in others:
            if Path(path).suffix.lower() in (".json", ".jsonl"):
                _read_text(path, what)  # one clear error for bytes that are not UTF-8
        ds = read_data_files(others)
        rows.extend(_record_rows(ds.to_list(), ds.column_names, f"{what} {others}"))
    return rows


def _clean(rows: list[dict], *, train: bool, where: str) -> tuple[list[dict], list[str]]:
    """Validate and repair the rows of one split (the module docstring's rules); returns the kept
    examples and the notes."""
    kept, repaired, unfound, lost, no_answer, impossible, no_text = [], 0, 0, 0, 0, 0, 0
    for row in rows:
        question, context = row.get("question"), row.get("context")
        if not isinstance(question, str) or not question.strip() or not isinstance(context, str) or not context:
            no_text += 1
            continue
        try:
            answers = _answers_list(row.get("answers"))
        except ValueError as err:
            raise ValueError(f"{where}: question {row.get('id')!r}: {err}") from None
        texts, starts = [], []
        for text, start in answers:
            fixed = repair_answer_start(context, text, start)
            if fixed is None:
                unfound += 1
                if train:
                    continue
                fixed = -1
            elif fixed != start:
                repaired += 1
            texts.append(text)
            starts.append(fixed)
        if not answers:
            no_answer += 1
            impossible += bool(row.get("is_impossible"))
            continue
        if not texts:  # train: none of its answers occurs in the context
            lost += 1
            continue
        kept.append({"id": str(row.get("id")), "title": row.get("title"), "question": question,
                     "context": context, "answers": {"text": texts, "answer_start": starts}})
    notes = []
    if repaired:
        notes.append(f"{where}: {repaired} answer_start values did not point at their answer text; moved to "
                     f"the nearest occurrence of the text in the context")
    if unfound:
        notes.append(f"{where}: {unfound} answers whose text does not occur in their context "
                     + (f"dropped (cannot be labelled), {lost} questions left without an answer dropped" if train
                        else "kept as gold text (the metric reads only text)"))
    if no_answer:
        extra = f", {impossible} marked is_impossible (SQuAD 2.0)" if impossible else ""
        notes.append(f"{where}: {no_answer} questions without an answer dropped{extra}")
    if no_text:
        notes.append(f"{where}: {no_text} rows without a question or context dropped")
    if not kept:
        raise ValueError(f"{where}: no answerable questions left (" + ("; ".join(notes) or "no rows") + ")")
    return kept, notes


# ====================================================================================== post-processing


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, context_mask: np.ndarray, *,
               n_best_size: int, max_answer_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best span of each window.

    Args:
        start_logits, end_logits: ``(n, L)`` logits per window and token.
        context_mask: ``(n, L)`` True on context tokens (the only ones a span may use).
        n_best_size: start and end candidates per window (the highest logits).
        max_answer_length: longest span, in tokens.

    Returns:
        ``(start, end, score)``, each ``(n,)``: token indices and start + end logit; windows
        with no valid span get score ``-inf``.
    """
    n, width = start_logits.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    k = min(n_best_size, width)
    start = np.where(context_mask, start_logits, -np.inf).astype(np.float64)
    end = np.where(context_mask, end_logits, -np.inf).astype(np.float64)
    s_idx = np.argpartition(-start, k - 1, axis=1)[:, :k]  # (n, k) the k highest starts
    e_idx = np.argpartition(-end, k - 1, axis=1)[:, :k]
    s_val = np.take_along_axis(start, s_idx, axis=1)
    e_val = np.take_along_axis(end, e_idx, axis=1)
    scores = s_val[:, :, None] + e_val[:, None, :]  # (n, k, k)
    length = e_idx[:, None, :] - s_idx[:, :, None] + 1
    scores = np.where((length >= 1) & (length <= max_answer_length), scores, -np.inf)
    flat = scores.reshape(n, -1).argmax(axis=1)
    si, ei = np.divmod(flat, k)
    rows = np.arange(n)
    return s_idx[rows, si], e_idx[rows, ei], scores.reshape(n, -1)[rows, flat]


# ====================================================================================== the task


def _check_int_option(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"data.task_options.{name} must be an int >= {minimum}, got {name}={value!r}")
    return value


@dataclass
class ExtractiveQATask(Task):
    """Extractive question answering (SQuAD v1.1); the module docstring has the data rules, the
    tokenisation, the post-processing, the metrics and the floor.

    Options (``data.task_options``): ``doc_stride`` (overlap of a context's windows in tokens,
    default ``max_seq_length // 3``: 128 at the reference 384), ``max_answer_length`` (30 tokens),
    ``n_best_size`` (20).
    """

    kind: ClassVar[str] = "extractive_qa"
    auto_model: ClassVar[str] = "AutoModelForQuestionAnswering"
    pipeline_tag: ClassVar[str] = "question-answering"
    target_keys: ClassVar[tuple[str, ...]] = ("start_positions", "end_positions")
    allowed_metrics: ClassVar[tuple[str, ...]] = ("f1", "exact_match")

    # ------------------------------------------------------------------ options

    @classmethod
    def check_options(cls, options: dict | None) -> dict:
        """Fill the defaults of :data:`QA_OPTIONS` and check each value; ``doc_stride`` against
        ``max_seq_length`` is checked when the data is loaded (:meth:`check_stride`).

        Raises:
            ValueError: an unknown option or a value that is not an int >= 1.
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(QA_OPTIONS))
        if unknown:
            raise ValueError(f"data.task_options: unknown option(s) {unknown} for task type 'extractive_qa'; "
                             f"allowed: {sorted(QA_OPTIONS)}")
        out = {**QA_OPTIONS, **options}
        if out["doc_stride"] is not None:
            _check_int_option("doc_stride", out["doc_stride"], 1)
        _check_int_option("max_answer_length", out["max_answer_length"], 1)
        _check_int_option("n_best_size", out["n_best_size"], 1)
        return out

    def doc_stride(self, max_seq_length: int) -> int:
        """The window overlap in tokens at ``max_seq_length``."""
        stride = self.options.get("doc_stride")
        return max(1, max_seq_length // 3) if stride is None else int(stride)

    def check_stride(self, max_seq_length: int) -> None:
        """Raises ValueError when ``doc_stride >= max_seq_length`` (windows would not advance)."""
        stride = self.doc_stride(max_seq_length)
        if stride >= max_seq_length:
            raise ValueError(f"data.task_options.doc_stride={stride} must be smaller than data.max_seq_length="
                             f"{max_seq_length} (the overlap of two windows of max_seq_length tokens)")

    # ------------------------------------------------------------------ data

    @classmethod
    def load(cls, spec, data_dir):
        """Read ``train_files`` / ``eval_files`` (or carve eval by ``eval_fraction``), or the hub
        dataset (``dataset``, default ``rajpurkar/squad`` for ``task: squad``); repair and count,
        subsample (``max_train_samples`` / ``max_eval_samples`` questions), carve the selection
        split.  ``data_dir`` is not used."""
        from rayprune.data.labels import STREAM_EVAL, STREAM_TRAIN, seeded_subset, split_selection
        from rayprune.data.spec import TaskData

        task = cls(metrics=tuple(spec.metrics or cls.allowed_metrics), options=cls.check_options(spec.task_options))
        task.check_stride(spec.max_seq_length)
        notes: list[str] = []
        if spec.train_files is not None:
            train_where = f"train_files {spec.train_files}"
            train_rows = _read_files(spec.train_files, "train_files")
            if spec.eval_fraction is not None:
                train_rows, eval_rows, note = _carve(train_rows, spec, train_where)
                eval_where = f"{train_where} (eval part)"
                train_where = f"{train_where} (train part)"
                notes.append(note)
            else:
                eval_where = f"eval_files {spec.eval_files}"
                eval_rows = _read_files(spec.eval_files, "eval_files")
            name = "squad" if spec.task == "squad" else Path(spec.train_files[0]).stem
            source = "files:" + ",".join(spec.train_files + (spec.eval_files or []))
        else:
            name = spec.dataset or SQUAD_HUB_NAME
            train_rows, eval_rows, train_where, eval_where, source = _hub_rows(spec, name)
            name = "squad" if spec.task == "squad" else name
        train, train_notes = _clean(train_rows, train=True, where=train_where)
        evals, eval_notes = _clean(eval_rows, train=False, where=eval_where)
        notes += train_notes + eval_notes
        train = [train[i] for i in seeded_subset(len(train), spec.max_train_samples, spec.seed, STREAM_TRAIN)]
        evals = [evals[i] for i in seeded_subset(len(evals), spec.max_eval_samples, spec.seed, STREAM_EVAL)]
        train, selection = split_selection(train, spec.selection_fraction, spec.seed)
        return TaskData(name=name, train=train, selection=selection, eval=evals,
                        text_fields=("question", "context"), label_field="answers", num_labels=2,
                        is_regression=False, metrics=task.metrics, label_names=None, source=source,
                        max_seq_length=spec.max_seq_length, task=task, notes=notes)

    def tokenize(self, task_data, tokenizer, max_seq_length):
        self.check_stride(max_seq_length)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"extractive_qa needs a fast tokenizer (offset mappings); "
                             f"{type(tokenizer).__name__} is not one")
        return {name: self._tokenize_split(getattr(task_data, name), tokenizer, max_seq_length)
                for name in ("train", "selection", "eval")}

    def _tokenize_split(self, examples: list[dict], tokenizer, max_seq_length: int):
        from rayprune.data.tokenize import TokenizedSplit

        stride = self.doc_stride(max_seq_length)
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        # The context gets max_seq_length - specials - question tokens; the tokenizer needs more
        # than `stride` of them, so a longer question is cut to fit.
        max_question = max_seq_length - specials - stride - 1
        if max_question < 1:
            raise ValueError(f"data.task_options.doc_stride={stride} leaves no room for the question in windows of "
                             f"data.max_seq_length={max_seq_length} tokens ({specials} special tokens): "
                             f"doc_stride must be at most {max_seq_length - specials - 2}")
        meta: dict[str, Any] = {"examples": [{"id": ex["id"], "question": ex["question"], "context": ex["context"],
                                              "answers": list(ex["answers"]["text"])} for ex in examples],
                                "truncated_questions": 0}
        if not examples:
            empty = np.zeros((0, 0), dtype=np.int32)
            return TokenizedSplit(input_ids=empty, attention_mask=empty.astype(np.int8), token_type_ids=None,
                                  labels=None, targets={"start_positions": np.zeros(0, np.int64),
                                                        "end_positions": np.zeros(0, np.int64)},
                                  meta={**meta, "example": np.zeros(0, np.int32),
                                        "offsets": np.zeros((0, 0, 2), np.int32)})
        questions = [ex["question"].lstrip() for ex in examples]
        questions, meta["truncated_questions"] = _fit_questions(questions, tokenizer, max_question)
        # In chunks: the tokenizer's Python lists (an offset tuple per token) cost ~50 times the
        # arrays they become; chunking bounds the peak (benchmarks/bench_task_preprocessing.py).
        parts = [self._tokenize_chunk(questions[lo:lo + TOKENIZE_CHUNK], examples[lo:lo + TOKENIZE_CHUNK], lo,
                                      tokenizer, max_seq_length, stride)
                 for lo in range(0, len(examples), TOKENIZE_CHUNK)]
        input_ids, attention, token_types, offsets, example, starts, ends = (
            None if parts[0][k] is None else np.concatenate([p[k] for p in parts]) for k in range(7))
        width = max(int(attention.sum(axis=1).max()), 1)  # trim the padding every window has
        meta.update(example=example, offsets=np.ascontiguousarray(offsets[:, :width]))
        return TokenizedSplit(input_ids=np.ascontiguousarray(input_ids[:, :width]),
                              attention_mask=np.ascontiguousarray(attention[:, :width]),
                              token_type_ids=None if token_types is None else np.ascontiguousarray(token_types[:, :width]),
                              labels=None, targets={"start_positions": starts, "end_positions": ends}, meta=meta)

    @staticmethod
    def _tokenize_chunk(questions, examples, first: int, tokenizer, max_seq_length: int, stride: int) -> tuple:
        """Windows of some questions as arrays ``max_seq_length`` wide: input ids, attention mask,
        token types (or None), offsets (-1 off context), example index (+ ``first``), start and
        end positions."""
        enc = tokenizer(questions, [ex["context"] for ex in examples], truncation="only_second",
                        max_length=max_seq_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding=False)
        ids = enc["input_ids"]
        n = len(ids)
        input_ids = np.full((n, max_seq_length), tokenizer.pad_token_id, dtype=np.int32)
        attention = np.zeros((n, max_seq_length), dtype=np.int8)
        types = enc.get("token_type_ids")
        token_types = np.zeros((n, max_seq_length), dtype=np.int8) if types is not None else None
        offsets = np.full((n, max_seq_length, 2), -1, dtype=np.int32)  # -1: not a context token
        example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int32)
        starts = np.zeros(n, dtype=np.int64)
        ends = np.zeros(n, dtype=np.int64)
        for i, row in enumerate(ids):
            length = len(row)
            input_ids[i, :length] = row
            attention[i, :length] = 1
            if token_types is not None:
                token_types[i, :length] = types[i]
            context = np.fromiter((s == 1 for s in enc.sequence_ids(i)), dtype=bool, count=length)
            window = offsets[i, :length]  # a view: (length, 2)
            window[context] = np.asarray(enc["offset_mapping"][i], dtype=np.int32)[context]
            starts[i], ends[i] = _window_label(window, examples[example[i]]["answers"])
        return input_ids, attention, token_types, offsets, example + first, starts, ends

    # ------------------------------------------------------------------ training

    def logit_rows(self, outputs, batch):
        """Two problems per window: the start position and the end position, each a
        distribution over the window's tokens (padding masked out), with the gold positions
        when the batch carries them."""
        mask = batch["attention_mask"].bool()
        return [(outputs.start_logits.float().masked_fill(~mask, -1e4), batch.get("start_positions")),
                (outputs.end_logits.float().masked_fill(~mask, -1e4), batch.get("end_positions"))]

    def distillation_loss(self, outputs, teacher_outputs, batch, temperature):
        """Mean of the soft-target losses of the start and of the end logits; padding positions
        are masked out of both distributions."""
        from rayprune.tasks.classification import logits_distillation_loss

        mask = batch["attention_mask"].bool()

        def masked(logits):
            return logits.float().masked_fill(~mask, -1e4)

        start = logits_distillation_loss(masked(outputs.start_logits), masked(teacher_outputs.start_logits), temperature)
        end = logits_distillation_loss(masked(outputs.end_logits), masked(teacher_outputs.end_logits), temperature)
        return (start + end) / 2

    # ------------------------------------------------------------------ evaluation

    def predict_answers(self, model, split, batch_size: int, *, limit: int | None = None) -> list[str]:
        """The predicted answer text of each question of ``split`` (the first ``limit`` ones)."""
        meta = split.meta
        examples = meta["examples"]
        n_examples = len(examples) if limit is None else min(limit, len(examples))
        rows = np.nonzero(meta["example"] < n_examples)[0]
        if n_examples == 0:
            return []
        sub = split.subset(rows) if len(rows) != len(split) else split
        start_logits, end_logits = _predict_logits(model, sub, batch_size, self)
        offsets = meta["offsets"][rows][:, : start_logits.shape[1]]
        s, e, score = best_spans(start_logits, end_logits, offsets[:, :, 0] >= 0,
                                 n_best_size=int(self.options["n_best_size"]),
                                 max_answer_length=int(self.options["max_answer_length"]))
        answers = [""] * n_examples
        best = np.full(n_examples, -np.inf)
        for f, ex in enumerate(meta["example"][rows]):
            if score[f] > best[ex]:
                best[ex] = score[f]
                context = examples[ex]["context"]
                answers[ex] = context[offsets[f, s[f], 0]:offsets[f, e[f], 1]]
        return answers

    def evaluate(self, model, split, batch_size):
        examples = split.meta["examples"]
        scores = squad_scores(self.predict_answers(model, split, batch_size), [ex["answers"] for ex in examples])
        return {m: scores[m] for m in self.metrics}

    def floor(self, metric, data):
        """The best fixed-position span (module docstring), chosen on train, scored on eval."""
        choose_on = data.train.meta["examples"][:FLOOR_CHOICE_QUESTIONS] or data.eval.meta["examples"]
        best = max(_fixed_span_grid(choose_on, metric).items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        i, k = best[0]
        return float(_fixed_span_grid(data.eval.meta["examples"], metric, only=(i, k))[i, k])

    def floor_description(self):
        return ("the best fixed-position span (the same context words for every question, chosen on train): "
                "a predictor that reads neither question nor context")

    def eval_size(self, split):
        return len(split.meta["examples"])

    def predictions_sample(self, model, split, *, limit=SAMPLE_QUESTIONS, batch_size=32) -> PredictionsSample:
        predicted = self.predict_answers(model, split, batch_size, limit=limit)
        examples = split.meta["examples"]
        return [{"question": examples[i]["question"], "gold": " | ".join(examples[i]["answers"]),
                 "predicted": predicted[i]} for i in range(len(predicted))]

    # ------------------------------------------------------------------ export

    def card_usage(self, path="<this directory>"):
        """A runnable snippet with the Auto classes: transformers 5 removed the
        ``pipeline("question-answering")`` that 4.x had (the pinned 5.25 raises a KeyError for
        it), so the card picks the best span itself, for one window (contexts up to
        ``max_seq_length`` tokens) and the same rules as the evaluation."""
        n = int(self.options.get("max_answer_length") or 30)
        return (f"```python\nimport torch\n"
                f"from transformers import AutoModelForQuestionAnswering, AutoTokenizer\n\n"
                f"tokenizer = AutoTokenizer.from_pretrained({path!r})\n"
                f"model = AutoModelForQuestionAnswering.from_pretrained({path!r}).eval()\n"
                f"question = \"Who wrote it?\"\n"
                f"context = \"The book was written by Ada in 1843.\"\n"
                f"enc = tokenizer(question, context, truncation=\"only_second\", return_offsets_mapping=True,\n"
                f"                return_tensors=\"pt\")\n"
                f"offsets = enc.pop(\"offset_mapping\")[0].tolist()\n"
                f"in_context = torch.tensor([s == 1 for s in enc.sequence_ids(0)])\n"
                f"with torch.no_grad():\n"
                f"    out = model(**enc)\n"
                f"start = out.start_logits[0].masked_fill(~in_context, -1e9)\n"
                f"end = out.end_logits[0].masked_fill(~in_context, -1e9)\n"
                f"scores = start[:, None] + end[None, :]  # (start token, end token)\n"
                f"allowed = torch.ones_like(scores, dtype=torch.bool).triu().tril({n - 1})  # start <= end, <= {n} tokens\n"
                f"s, e = divmod(int(scores.masked_fill(~allowed, -float(\"inf\")).argmax()), scores.shape[1])\n"
                f"answer = context[offsets[s][0]:offsets[e][1]]\n"
                f"# transformers 4.x: pipeline({self.pipeline_tag!r}, model={path!r})(question=..., context=...)\n"
                f"```")


# ====================================================================================== helpers


def _carve(rows: list[dict], spec, where: str) -> tuple[list[dict], list[dict], str]:
    from rayprune.data.splits import describe_carve, eval_mask_by_group

    field = spec.group_field
    if field is not None:
        missing = [i for i, r in enumerate(rows) if field not in r]
        if missing:
            raise ValueError(f"{where}: data.group_field {field!r} is not a field of the rows (row {missing[0]}); "
                             f"available: {sorted(k for k in rows[missing[0]] if k != 'answers')}")
    keys = [r[field] for r in rows] if field else [None] * len(rows)
    mask = eval_mask_by_group(keys, spec.eval_fraction, spec.seed, where=where, group_field=field)
    train = [r for r, m in zip(rows, mask) if not m]
    evals = [r for r, m in zip(rows, mask) if m]
    return train, evals, describe_carve(mask, keys, spec.eval_fraction, spec.seed, field)


def _hub_rows(spec, name: str):
    from rayprune.data.sources.hub import _EVAL_SPLIT_CANDIDATES, _hub_load, _hub_split

    dd = _hub_load(name, spec.dataset_config)
    eval_split = spec.eval_split or next((s for s in _EVAL_SPLIT_CANDIDATES if s in dd), None)
    if eval_split is None:
        raise ValueError(f"dataset {name!r} has no validation/dev/test split; set eval_split to one of {list(dd)}")
    train_ds, eval_ds = _hub_split(dd, spec.train_split, name), _hub_split(dd, eval_split, name)
    where = (f"{name} split {spec.train_split!r}", f"{name} split {eval_split!r}")
    train = _record_rows(train_ds.to_list(), train_ds.column_names, where[0])
    evals = _record_rows(eval_ds.to_list(), eval_ds.column_names, where[1])
    config = f"/{spec.dataset_config}" if spec.dataset_config else ""
    return train, evals, where[0], where[1], f"hub:{name}{config}[{spec.train_split},{eval_split}]"


def _fit_questions(questions: list[str], tokenizer, max_tokens: int) -> tuple[list[str], int]:
    """Cut questions longer than ``max_tokens`` tokens at a token boundary; returns the questions
    and how many were cut."""
    cut = 0
    for _ in range(3):  # a cut prefix can re-tokenize one token longer; cut again
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        long = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > max_tokens]
        if not long:
            return questions, cut
        questions = list(questions)
        for i in long:
            questions[i] = questions[i][: enc["offset_mapping"][i][max_tokens - 1][1]]
        cut += len(long) if _ == 0 else 0
    return questions, cut


def _window_label(offsets: np.ndarray, answers: dict) -> tuple[int, int]:
    """(start token, end token) of the first gold answer in one window, or (0, 0) (CLS) when the
    answer is not wholly inside the window's context.  ``offsets`` is ``(L, 2)``, -1 off context."""
    located = [(s, t) for s, t in zip(answers["answer_start"], answers["text"]) if s >= 0]
    if not located:  # eval text not found in its context: no position
        return 0, 0
    start_char, text = located[0]
    end_char = start_char + len(text)
    context = np.nonzero(offsets[:, 0] >= 0)[0]
    if context.size == 0:
        return 0, 0
    first, last = context[0], context[-1]
    if offsets[first, 0] > start_char or offsets[last, 1] < end_char:
        return 0, 0
    token_starts, token_ends = offsets[first:last + 1, 0], offsets[first:last + 1, 1]
    start = first + int(np.searchsorted(token_starts, start_char, side="right")) - 1
    end = first + int(np.searchsorted(token_ends, end_char, side="left"))
    return start, max(end, start)


def _predict_logits(model, split, batch_size: int, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits of every window, ``(n, L)`` each, -inf past a batch's width."""
    import torch

    width = split.input_ids.shape[1]
    start = np.full((len(split), width), -np.inf, dtype=np.float32)
    end = np.full((len(split), width), -np.inf, dtype=np.float32)
    model.eval()
    device = next(model.parameters()).device
    row = 0
    with torch.no_grad():
        for batch in split.batches(batch_size, shuffle=False):
            inputs = {k: v.to(device) for k, v in task.model_inputs(batch).items()}
            out = model(**inputs)
            b, w = batch["input_ids"].shape
            start[row:row + b, :w] = out.start_logits.float().cpu().numpy()
            end[row:row + b, :w] = out.end_logits.float().cpu().numpy()
            row += b
    model.train()
    return start, end


def _fixed_span_grid(examples: list[dict], metric: str, only: tuple[int, int] | None = None) -> dict:
    """Mean ``metric`` of each fixed-position span "context words i .. i + k - 1" over
    ``examples``; ``only`` scores one (i, k)."""
    if metric not in ("f1", "exact_match"):
        raise ValueError(f"unknown extractive_qa metric {metric!r}; allowed: {list(ExtractiveQATask.allowed_metrics)}")
    grid = [only] if only else [(i, k) for i in range(FLOOR_MAX_START) for k in range(1, FLOOR_MAX_WORDS + 1)]
    totals = dict.fromkeys(grid, 0.0)
    for ex in examples:
        # Normalisation is word-local (punctuation, articles, case), so a span's normalised tokens
        # are its words' normalised tokens in order.
        words = [normalize_answer(w).split() for w in ex["context"].split()[: FLOOR_MAX_START + FLOOR_MAX_WORDS]]
        golds = [normalize_answer(a) for a in ex["answers"]]
        gold_tokens = [g.split() for g in golds]
        for i, k in grid:
            tokens = [t for w in words[i:i + k] for t in w]
            if metric == "exact_match":
                totals[i, k] += float(any(" ".join(tokens) == g for g in golds))
            else:
                totals[i, k] += max(token_f1(tokens, g) for g in gold_tokens)
    n = max(len(examples), 1)
    return {key: total / n if examples else math.nan for key, total in totals.items()}
