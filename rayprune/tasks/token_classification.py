"""Task ``token_classification``: one tag per word (named-entity recognition and other tagging).

Data (:meth:`TokenClassificationTask.load`):

- ``train_files`` / ``eval_files`` ending ``.json``, ``.jsonl`` or ``.parquet``: a row per sentence
  with a list of tokens and a list of tags (the hub's ``conll2003`` / ``wnut_17`` shapes).  The
  token column is ``text_fields[0]`` when set, else ``tokens``; the tag column ``label_field`` when
  set, else ``tags`` or ``ner_tags``.  Tags are strings, or class ids mapped through the file's
  ``ClassLabel`` names (a parquet file written by ``datasets`` keeps them).
- any other extension (``.conll``, ``.txt``, ``.train``, ``.tsv``...): CoNLL column files, read by
  :func:`rayprune.data.conll.read_conll` (token first, tag last, blank or whitespace-only lines
  between sentences, ``-DOCSTART-`` skipped).  CoNLL-2003's own ``eng.*`` files load as they are
  (4 space-separated columns, IOB1: set ``task_options: {tag_scheme: iob1}``).
- ``dataset`` (+ ``dataset_config``): a hub dataset with ``tokens`` and ``ner_tags`` columns.

Tags are read as IOB2 (``task_options.tag_scheme``, default ``iob2``) or IOB1, and held as IOB2.
An ``I-X`` that starts an entity becomes ``B-X``: IOB1's rule, and in IOB2 data a repair that
conlleval's reading already implies (the count goes to ``TaskData.notes``).  The label set is
``O`` plus ``B-``/``I-`` of every entity type in the training data; an eval entity of a type
training never saw is an error naming the file and line (the head would have no output for it,
and mapping it to ``O`` would silently raise the score).  Empty tokens (BTC has a few ``"\\tO"``
lines) are dropped and counted.

Tokenisation (:meth:`~TokenClassificationTask.tokenize`): the words go to a fast tokenizer as
pre-split words; the first sub-word of each word carries its tag, the other sub-words and special
tokens -100, which the loss ignores (``run_ner.py``'s default).  Predictions are read back per
word from its first sub-word's argmax.  A word truncated away by ``max_seq_length`` (or one the
tokenizer turns into no sub-word at all) is predicted ``O``, so its entity counts as missed; the
counts go to ``TaskData.notes``.

Metric: entity-level ``precision``, ``recall`` and ``f1`` in [0, 1] with conlleval's semantics (an
entity counts only when its type and both boundaries match; an ``I-`` after ``O`` or after another
type starts an entity), primary ``f1``; :meth:`~TokenClassificationTask.evaluate` adds the F1 of
each entity type as ``f1/<TYPE>`` (``f1/PER``).  Written here rather than taken from ``seqeval``:
that package pulls in scikit-learn for what is a 60-line function.

Floor: the CoNLL shared task's baseline, learnt from the train split: a word seen in training
with one tag only gets that tag, a word seen with several tags or never seen gets ``O``; entities
are assembled from these tags and scored like a model's.

BTC (the Broad Twitter Corpus, /work/shared/data/ner/btc): in @-mentions the ``@`` is its own
one-token entity (16% of train entities, 35% of dev's).  Such an ``@`` is trivial for a model,
which raises entity F1 (the baseline gets none of them: ``@`` is tagged PER, ORG, LOC and O);
loading counts them in ``TaskData.notes``, so read BTC scores with that in mind.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from rayprune.data.conll import check_tag, entity_type, read_conll, to_iob2
from rayprune.tasks.base import PredictionsSample, Task
from rayprune.tasks.classification import logits_distillation_loss

__all__ = ["TokenClassificationTask", "entities", "entity_scores", "EntityScores", "unique_tag_lexicon",
           "TAG_SCHEMES"]

TAG_SCHEMES = ("iob2", "iob1")
#: Extensions read as tables of sentences through ``datasets``; every other one is a CoNLL file.
TABLE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
#: Sentences of each split whose words are kept for the predictions sample.
SAMPLE_SENTENCES = 20
#: The eval split of a hub dataset when the spec names none: the first of these it has.
_EVAL_SPLITS = ("validation", "dev", "test")
_OUTSIDE = "O"


# ---------------------------------------------------------------------------------------- metric


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one tag sequence as ``(type, first word, last word)``, read as conlleval
    does: ``B-X`` starts an entity; ``I-X`` continues an ``X`` entity, or starts one after ``O``,
    after another type or at the sentence start; ``O`` ends one."""
    found, current = [], None  # current: [type, first]
    for i, tag in enumerate(tags):
        kind = None if tag == _OUTSIDE else tag[2:]
        if current is not None and (kind != current[0] or tag.startswith("B-")):
            found.append((current[0], current[1], i - 1))
            current = None
        if kind is not None and current is None:
            current = [kind, i]
    if current is not None:
        found.append((current[0], current[1], len(tags) - 1))
    return found


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """conlleval's precision, recall, F1: 0 where a denominator is 0."""
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@dataclass
class EntityScores:
    """Entity-level scores of a set of sentences.

    Attributes:
        precision, recall, f1: over all entity types, in [0, 1].
        per_type: ``{type: (precision, recall, f1, gold entities)}``.
        gold, predicted, correct: entity counts.
    """

    precision: float
    recall: float
    f1: float
    per_type: dict[str, tuple[float, float, float, int]] = field(default_factory=dict)
    gold: int = 0
    predicted: int = 0
    correct: int = 0

    def as_metrics(self, names: Sequence[str]) -> dict[str, float]:
        """``{name: value}`` for ``names`` (of precision, recall, f1), then ``f1/<TYPE>``."""
        out = {name: float(getattr(self, name)) for name in names}
        out.update({f"f1/{kind}": scores[2] for kind, scores in self.per_type.items()})
        return out


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                  types: Sequence[str] = ()) -> EntityScores:
    """conlleval's entity precision / recall / F1 of ``predicted`` against ``gold`` (one tag
    sequence per sentence, equal lengths).  ``types``: entity types always listed in
    ``per_type`` (score 0 when absent from both), so every evaluation reports the same keys."""
    counts = {kind: [0, 0, 0] for kind in types}  # type -> [correct, predicted, gold]
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
        gold_set, pred_set = set(entities(g)), set(entities(p))
        for kind, *_ in gold_set:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
        for kind, *_ in pred_set:
            counts.setdefault(kind, [0, 0, 0])[1] += 1
        for kind, *_ in gold_set & pred_set:
            counts[kind][0] += 1
    correct, n_pred, n_gold = (sum(c[j] for c in counts.values()) for j in range(3))
    per_type = {kind: (*_prf(*c), c[2]) for kind, c in sorted(counts.items())}
    return EntityScores(*_prf(correct, n_pred, n_gold), per_type=per_type, gold=n_gold, predicted=n_pred,
                        correct=correct)


# ----------------------------------------------------------------------------------------- floor


def unique_tag_lexicon(sentences: Sequence[tuple[Sequence[str], Sequence[int]]]) -> dict[str, int]:
    """The CoNLL baseline's lexicon: each training word seen with exactly one tag -> that tag id
    (words seen with several tags are left out, as are words never seen: both get ``O``)."""
    seen: dict[str, set] = {}
    for tokens, tags in sentences:
        for token, tag in zip(tokens, tags):
            seen.setdefault(token, set()).add(int(tag))
    return {token: next(iter(tags)) for token, tags in seen.items() if len(tags) == 1}


# ------------------------------------------------------------------------------------------ data


@dataclass
class _Raw:
    """Sentences of one split as read: words, string tags, where each starts, its group."""

    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    groups: list[Any] = field(default_factory=list)
    empty_tokens: int = 0
    empty_sentences: int = 0
    class_names: tuple[str, ...] | None = None

    def add(self, tokens, tags, where, group=None) -> None:
        self.tokens.append(tokens)
        self.tags.append(tags)
        self.where.append(where)
        self.groups.append(group)

    def take(self, mask: np.ndarray, keep: bool) -> "_Raw":
        out = _Raw(empty_tokens=self.empty_tokens, empty_sentences=self.empty_sentences,
                   class_names=self.class_names)
        for i, m in enumerate(mask):
            if bool(m) == keep:
                out.add(self.tokens[i], self.tags[i], self.where[i], self.groups[i])
        return out


def _read_conll_files(files: Sequence[str], group_field: str | None) -> _Raw:
    raw = _Raw()
    for path in files:
        conll = read_conll(path)
        raw.empty_tokens += conll.empty_tokens
        raw.empty_sentences += conll.empty_sentences
        for s in conll.sentences:
            group = (path, s.document) if group_field == "document" else None
            raw.add(s.tokens, s.tags, f"{path}:{s.line}", group)
    if group_field not in (None, "document"):
        raise ValueError(f"group_field {group_field!r}: CoNLL files have no columns to group by; the one "
                         f"grouping they offer is 'document' (the sentences between -DOCSTART- lines)")
    return raw


def _tag_names(ds: Any, column: str) -> tuple[str, ...] | None:
    """The ``ClassLabel`` names of a sequence-of-class-ids column, else ``None``."""
    feature = ds.features.get(column)
    inner = getattr(feature, "feature", None)
    names = getattr(inner, "names", None) or getattr(feature, "names", None)
    return tuple(names) if names else None


def _columns(ds: Any, spec, where: str) -> tuple[str, str]:
    """(tokens column, tags column) of a table of sentences (rules in the module docstring)."""
    tokens_col = spec.text_fields[0] if spec.text_fields else "tokens"
    if spec.label_field != "label":
        tags_candidates = [spec.label_field]
    else:
        tags_candidates = [c for c in ("tags", "ner_tags") if c in ds.column_names] or ["tags"]
    for column, what in ((tokens_col, "tokens (data.text_fields)"), (tags_candidates[0], "tags (data.label_field)")):
        if column not in ds.column_names:
            raise ValueError(f"{where}: no column {column!r} for the {what}; available columns: {ds.column_names}")
    return tokens_col, tags_candidates[0]


def _dataset_sentences(ds: Any, spec, where: str, raw: _Raw | None = None) -> _Raw:
    """A ``datasets.Dataset`` with a token list and a tag list per row -> sentences."""
    raw = raw or _Raw()
    tokens_col, tags_col = _columns(ds, spec, where)
    names = _tag_names(ds, tags_col)
    raw.class_names = raw.class_names or names
    group_col = spec.group_field if spec.eval_fraction is not None else None
    if group_col is not None and group_col not in ds.column_names:
        raise ValueError(f"{where}: no column {group_col!r} (data.group_field); available: {ds.column_names}")
    columns = ds.select_columns([tokens_col, tags_col] + ([group_col] if group_col else [])).to_dict()
    for i, (tokens, tags) in enumerate(zip(columns[tokens_col], columns[tags_col])):
        at = f"{where} row {i}"
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise ValueError(f"{at}: {tokens_col!r} and {tags_col!r} must be lists (one entry per word), "
                             f"got {type(tokens).__name__} and {type(tags).__name__}")
        if len(tokens) != len(tags):
            raise ValueError(f"{at}: {len(tokens)} tokens but {len(tags)} tags")
        words, labels = [], []
        for token, tag in zip(tokens, tags):
            if isinstance(tag, (int, np.integer)) and not isinstance(tag, bool):
                if names is None or not 0 <= tag < len(names):
                    raise ValueError(f"{at}: tag id {tag} has no name (the column {tags_col!r} is not a "
                                     f"ClassLabel sequence); write the tags as strings such as 'B-PER'")
                tag = names[tag]
            if not isinstance(tag, str):
                raise ValueError(f"{at}: tag {tag!r} is not a string or a class id")
            tag = check_tag(tag.strip(), at)
            token = "" if token is None else str(token).strip()
            if not token:
                raw.empty_tokens += 1
                continue
            words.append(token)
            labels.append(tag)
        if words:
            raw.add(words, labels, at, columns[group_col][i] if group_col else None)
        elif tokens:
            raw.empty_sentences += 1
    return raw


def _read_files(files: Sequence[str], spec, key: str) -> _Raw:
    suffixes = {Path(f).suffix.lower() in TABLE_FORMATS for f in files}
    if len(suffixes) > 1:
        raise ValueError(f"{key}: mix of CoNLL column files and json/parquet tables, got {list(files)}")
    if not suffixes.pop():
        return _read_conll_files(files, spec.group_field if spec.eval_fraction is not None else None)
    from rayprune.data.sources.files import read_data_files

    return _dataset_sentences(read_data_files(files), spec, f"{key} {list(files)}")


def _hub_splits(spec) -> tuple[_Raw, _Raw, str]:
    from rayprune.data.sources.hub import _hub_load

    dd = _hub_load(spec.dataset, spec.dataset_config)
    eval_split = spec.eval_split or next((s for s in _EVAL_SPLITS if s in dd), None)
    for split in (spec.train_split, eval_split):
        if split is None or split not in dd:
            raise ValueError(f"dataset {spec.dataset!r} has no split {split!r}; available splits: {list(dd)} "
                             f"(set data.train_split / data.eval_split)")
    train = _dataset_sentences(dd[spec.train_split], spec, f"{spec.dataset} split {spec.train_split!r}")
    evals = _dataset_sentences(dd[eval_split], spec, f"{spec.dataset} split {eval_split!r}")
    config = f"/{spec.dataset_config}" if spec.dataset_config else ""
    return train, evals, f"hub:{spec.dataset}{config}[{spec.train_split},{eval_split}]"


def _to_iob2(raw: _Raw) -> int:
    """Rewrite ``raw.tags`` to IOB2 in place; how many ``I-`` became ``B-``."""
    changed = 0
    for i, tags in enumerate(raw.tags):
        raw.tags[i], n = to_iob2(tags)
        changed += n
    return changed


def _label_names(train: _Raw) -> tuple[str, ...]:
    """``O``, then ``B-``/``I-`` of each training type: the class names' order where the data has
    them (ids stay the dataset's), types they lack appended in sorted order."""
    types = sorted({entity_type(t) for tags in train.tags for t in tags} - {None})
    names = list(train.class_names or ())
    if _OUTSIDE not in names:
        names.insert(0, _OUTSIDE)
    for kind in types:
        names.extend(tag for tag in (f"B-{kind}", f"I-{kind}") if tag not in names)
    return tuple(names)


def _check_eval_types(train: _Raw, evals: _Raw, train_where: str) -> None:
    known = {entity_type(t) for tags in train.tags for t in tags} - {None}
    for tags, where in zip(evals.tags, evals.where):
        for tag in tags:
            kind = entity_type(tag)
            if kind is not None and kind not in known:
                raise ValueError(f"{where}: entity type {kind!r} (tag {tag!r}) never occurs in the training data "
                                 f"({train_where}; types there: {sorted(known)}): the model could never predict "
                                 f"it. Retag or drop those sentences, or train on data that has it")


def _lone_at_entities(raw: _Raw) -> tuple[int, int]:
    """(entities that are a lone ``@`` token, all entities): BTC's @-mention convention."""
    lone = total = 0
    for tokens, tags in zip(raw.tokens, raw.tags):
        for _, first, last in entities(tags):
            total += 1
            lone += first == last and tokens[first] == "@"
    return lone, total


# ------------------------------------------------------------------------------------------ task


@dataclass
class TokenClassificationTask(Task):
    """Word-level tagging (NER): ``AutoModelForTokenClassification``, entity-level metrics.

    ``task_options``: ``tag_scheme`` (``iob2``, the default, or ``iob1``: how the files' tags are
    read; both are held as IOB2).  Everything else is in the module docstring.
    """

    kind: ClassVar[str] = "token_classification"
    auto_model: ClassVar[str] = "AutoModelForTokenClassification"
    pipeline_tag: ClassVar[str] = "token-classification"
    allowed_metrics: ClassVar[tuple[str, ...]] = ("f1", "precision", "recall")

    @classmethod
    def check_options(cls, options):
        options = dict(options or {})
        unknown = sorted(set(options) - {"tag_scheme"})
        if unknown:
            raise ValueError(f"data.task_options: unknown option(s) {unknown} for task type {cls.kind!r}; "
                             f"allowed: ['tag_scheme']")
        scheme = options.setdefault("tag_scheme", "iob2")
        if scheme not in TAG_SCHEMES:
            raise ValueError(f"data.task_options.tag_scheme must be one of {list(TAG_SCHEMES)}, got {scheme!r}")
        return options

    # ------------------------------------------------------------------ data

    @classmethod
    def load(cls, spec, data_dir):
        from rayprune.data.labels import STREAM_EVAL, STREAM_TRAIN, seeded_subset, split_selection
        from rayprune.data.spec import TaskData

        options = cls.check_options(spec.task_options)
        notes: list[str] = []
        if spec.train_files is not None:
            train = _read_files(spec.train_files, spec, "train_files")
            train_where, name = f"train_files {spec.train_files}", Path(spec.train_files[0]).stem
            if spec.eval_fraction is not None:
                from rayprune.data.splits import describe_carve, eval_mask_by_group

                mask = eval_mask_by_group(train.groups, spec.eval_fraction, spec.seed, where=train_where,
                                          group_field=spec.group_field)
                notes.append(describe_carve(mask, train.groups, spec.eval_fraction, spec.seed, spec.group_field))
                train, evals = train.take(mask, keep=False), train.take(mask, keep=True)
                evals.empty_tokens = evals.empty_sentences = 0
            else:
                evals = _read_files(spec.eval_files, spec, "eval_files")
            source = "files:" + ",".join(spec.train_files + (spec.eval_files or []))
        elif spec.dataset is not None:
            train, evals, source = _hub_splits(spec)
            train_where, name = f"{spec.dataset} split {spec.train_split!r}", spec.dataset
        else:
            raise ValueError("task_type 'token_classification' needs train_files (+ eval_files or eval_fraction) "
                             "or a hub dataset")
        for split, raw in (("train", train), ("eval", evals)):
            if not raw.tokens:
                raise ValueError(f"the {split} split has no sentences")
            if raw.empty_tokens:
                notes.append(f"{split}: dropped {raw.empty_tokens} empty tokens (lines with a tag and no token)"
                             + (f", and so {raw.empty_sentences} sentences that had no other token"
                                if raw.empty_sentences else ""))
            changed = _to_iob2(raw)
            if changed and options["tag_scheme"] == "iob2":
                notes.append(f"{split}: {changed} I- tags start an entity; read as B- (as conlleval does). "
                             f"Many of them: IOB1 data? set data.task_options.tag_scheme: iob1")
        _check_eval_types(train, evals, train_where)
        lone, total = _lone_at_entities(evals)
        if lone:
            notes.append(f"eval: {lone} of {total} entities ({100 * lone / total:.0f}%) are a lone '@' token "
                         f"(@-mentions tagged as their own entity, as in BTC); they are easy and raise entity F1")
        names = _label_names(train)
        index = {tag: i for i, tag in enumerate(names)}

        def examples(raw: _Raw, idx: np.ndarray) -> list[dict]:
            return [{"tokens": raw.tokens[i], "tags": [index[t] for t in raw.tags[i]],
                     "text": " ".join(raw.tokens[i])} for i in idx]

        train_rows = examples(train, seeded_subset(len(train.tokens), spec.max_train_samples, spec.seed, STREAM_TRAIN))
        train_rows, selection = split_selection(train_rows, spec.selection_fraction, spec.seed)
        eval_rows = examples(evals, seeded_subset(len(evals.tokens), spec.max_eval_samples, spec.seed, STREAM_EVAL))
        metrics = tuple(spec.metrics or cls.allowed_metrics)
        task = cls(metrics=metrics, label_names=names, options=options)
        return TaskData(name=name, train=train_rows, selection=selection, eval=eval_rows, text_fields=("text",),
                        label_field="tags", num_labels=len(names), is_regression=False, metrics=metrics,
                        label_names=names, source=source, max_seq_length=spec.max_seq_length, task=task,
                        notes=notes)

    def tokenize(self, task_data, tokenizer, max_seq_length):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"token classification needs a fast tokenizer (its word_ids() align tags with "
                             f"sub-words); {type(tokenizer).__name__} is not one")
        lexicon = unique_tag_lexicon([(ex["tokens"], ex["tags"]) for ex in task_data.train])
        outside = self.outside_id
        splits = {}
        for name in ("train", "selection", "eval"):
            examples = getattr(task_data, name)
            splits[name], truncated, unaligned = _tokenize_words(examples, tokenizer, max_seq_length)
            if truncated or unaligned:
                task_data.notes.append(
                    f"{name}: {truncated} words beyond max_seq_length={max_seq_length} and {unaligned} words "
                    f"the tokenizer gives no sub-word are never seen by the model and count as O predictions")
        floor_tags = [lexicon.get(token, outside) for ex in task_data.eval for token in ex["tokens"]]
        splits["eval"].meta["floor_tags"] = np.asarray(floor_tags, dtype=np.int16)
        return splits

    @property
    def outside_id(self) -> int:
        return self.label_names.index(_OUTSIDE) if self.label_names and _OUTSIDE in self.label_names else 0

    # ------------------------------------------------------------------ training

    def logit_rows(self, outputs, batch):
        """One row per token that carries a tag (a word's first sub-word), with its tag id."""
        labelled = batch["labels"] != -100  # (b, l)
        return [(outputs.logits[labelled], batch["labels"][labelled])]

    def distillation_loss(self, outputs, teacher_outputs, batch, temperature):
        """Soft targets on the tokens that carry a tag (a word's first sub-word), one row each."""
        labelled = batch["labels"] != -100  # (b, l)
        if not bool(labelled.any()):
            return outputs.logits.sum() * 0.0
        return logits_distillation_loss(outputs.logits[labelled], teacher_outputs.logits[labelled], temperature)

    # ------------------------------------------------------------------ evaluation

    def word_predictions(self, model, split, batch_size: int) -> list[np.ndarray]:
        """Predicted tag ids per word of every sentence of ``split`` (first sub-word's argmax; ``O``
        for words the model never saw)."""
        import torch

        meta = _meta(split)
        outside = self.outside_id
        model.eval()
        device = next(model.parameters()).device
        out: list[np.ndarray] = []
        row = 0
        with torch.no_grad():
            for batch in split.batches(batch_size, shuffle=False):
                inputs = {k: v.to(device) for k, v in self.model_inputs(batch).items()}
                best = model(**inputs).logits.argmax(dim=-1).cpu().numpy()  # (b, width)
                for r in range(best.shape[0]):
                    starts = meta["word_start"][meta["offsets"][row]:meta["offsets"][row + 1]]
                    out.append(np.where(starts >= 0, best[r, np.maximum(starts, 0)], outside))
                    row += 1
        model.train()
        return out

    def scores(self, model, split, batch_size: int) -> EntityScores:
        """Entity precision / recall / F1 (and per type) of ``model`` on ``split``."""
        predicted = self.word_predictions(model, split, batch_size)
        return self._score(predicted, _gold(split))

    def per_type_f1(self, model, split, batch_size: int) -> dict[str, float]:
        """``{type: F1}`` of ``model`` on ``split`` (the ``f1/<TYPE>`` keys of :meth:`evaluate`)."""
        return {kind: s[2] for kind, s in self.scores(model, split, batch_size).per_type.items()}

    def evaluate(self, model, split, batch_size):
        return self.scores(model, split, batch_size).as_metrics(self.metrics)

    def _score(self, predicted: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> EntityScores:
        names = np.asarray(self.label_names, dtype=object)
        types = sorted({entity_type(t) for t in self.label_names} - {None})
        return entity_scores([list(names[g]) for g in gold], [list(names[p]) for p in predicted], types)

    def floor(self, metric, data):
        meta = _meta(data.eval)
        flat = meta.get("floor_tags")
        if flat is None:
            raise RuntimeError("the eval split was tokenized without the baseline's tags (tokenize() adds them)")
        offsets = meta["offsets"]
        predicted = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        return float(getattr(self._score(predicted, _gold(data.eval)), metric))

    def floor_description(self):
        return ("the CoNLL baseline: each word gets the tag it had in training when that tag was unique, "
                "else O, scored as entities")

    def eval_size(self, split):
        """The gold entities of ``split``: the units entity precision / recall are proportions of."""
        names = self.label_names or ()
        return sum(len(entities([names[t] for t in g])) for g in _gold(split))

    def predictions_sample(self, model, split, *, limit=10, batch_size=32) -> PredictionsSample:
        meta = _meta(split)
        sample = meta.get("sample_tokens") or []
        n = min(limit, len(sample), len(split))
        if n == 0:
            return []
        head = split.subset(np.arange(n))
        head.meta = {**meta, "offsets": meta["offsets"][: n + 1]}
        predicted = self.word_predictions(model, head, batch_size)
        names = self.label_names
        rows = []
        for tokens, gold, pred in zip(sample[:n], _gold(head), predicted):
            rows.append({"text": " ".join(tokens), "gold": _describe(tokens, [names[t] for t in gold]),
                         "predicted": _describe(tokens, [names[t] for t in pred])})
        return rows

    # ------------------------------------------------------------------ export

    def card_usage(self, path="<this directory>"):
        return (f"```python\nfrom transformers import pipeline\n"
                f"ner = pipeline({self.pipeline_tag!r}, model={path!r}, aggregation_strategy=\"simple\")\n"
                f"ner(\"Angela Merkel visited Paris.\")  # [{{'entity_group': 'PER', 'word': ..., "
                f"'score': ..., 'start': ..., 'end': ...}}, ...]\n```")


# ------------------------------------------------------------------------------- tokenisation


def _tokenize_words(examples: list[dict], tokenizer, max_seq_length: int):
    """One split -> (``TokenizedSplit``, words truncated away, words without a sub-word).

    ``meta``: ``word_start`` (flat int32: each word's first sub-word position, -1 if none),
    ``gold`` (flat int16 word tags), ``offsets`` (``(n + 1,)`` row starts in both) and
    ``sample_tokens`` (the words of the first :data:`SAMPLE_SENTENCES` rows).
    """
    from rayprune.data.tokenize import TokenizedSplit

    n = len(examples)
    lengths = np.fromiter((len(ex["tokens"]) for ex in examples), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    word_start = np.full(int(offsets[-1]), -1, dtype=np.int32)
    gold = np.fromiter((t for ex in examples for t in ex["tags"]), dtype=np.int16, count=int(offsets[-1]))
    meta = {"word_start": word_start, "gold": gold, "offsets": offsets,
            "sample_tokens": [list(ex["tokens"]) for ex in examples[:SAMPLE_SENTENCES]]}
    if n == 0:
        empty = np.zeros((0, 0), dtype=np.int32)
        return TokenizedSplit(empty, empty.astype(np.int8), None, empty.astype(np.int64), meta=meta), 0, 0
    try:
        enc = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, truncation=True,
                        max_length=max_seq_length)
    except (ValueError, TypeError, AssertionError) as err:
        raise ValueError(f"the tokenizer cannot take pre-split words ({type(tokenizer).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else err!r}); byte-level BPE tokenizers "
                         f"(RoBERTa, GPT-2) need add_prefix_space=True") from None
    ids = enc["input_ids"]
    width = max(len(x) for x in ids)
    input_ids = np.full((n, width), tokenizer.pad_token_id, dtype=np.int32)
    attention = np.zeros((n, width), dtype=np.int8)
    labels = np.full((n, width), -100, dtype=np.int64)
    truncated = unaligned = 0
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
        starts = word_start[offsets[i]:offsets[i + 1]]  # a view: filled in place
        last = -1
        for position, word in enumerate(enc.word_ids(i)):
            if word is not None and starts[word] < 0:
                starts[word] = position
                last = max(last, word)
        missing = starts < 0
        if missing.any():
            trailing = int(missing[last + 1:].sum())  # after the last word that got a sub-word
            if len(row) >= max_seq_length:
                truncated += trailing
            else:
                unaligned += trailing
            unaligned += int(missing[: last + 1].sum())
        seen = ~missing
        labels[i, starts[seen]] = gold[offsets[i]:offsets[i + 1]][seen]
    return TokenizedSplit(input_ids, attention, None, labels, meta=meta), truncated, unaligned


def _meta(split) -> dict:
    meta = split.meta if isinstance(split.meta, dict) else {}
    if "offsets" not in meta or len(meta["offsets"]) != len(split) + 1:
        raise RuntimeError("a token-classification split needs its word alignment in meta (offsets for each "
                           "row); subset the split's meta with its rows")
    return meta


def _gold(split) -> list[np.ndarray]:
    meta = _meta(split)
    offsets = meta["offsets"]
    return [meta["gold"][offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _describe(tokens: Sequence[str], tags: Sequence[str]) -> str:
    """``PER: Angela Merkel; LOC: Paris`` (``-`` for none)."""
    found = entities(list(tags))
    return "; ".join(f"{kind}: {' '.join(tokens[a:b + 1])}" for kind, a, b in found) or "-"
