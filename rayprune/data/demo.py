"""The built-in offline task: generated film-review sentiment with negation and contrast.

Sentences come from a seeded generator (:class:`_DemoGenerator`); the same seed gives the same
sentences, byte for byte, which the benchmarks and tests/data/test_pinned.py rely on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rayprune.data.labels import finalize_task, records_to_columns
from rayprune.data.presets import DEMO_TASK
from rayprune.data.spec import DEMO_MAX_EXAMPLES, DataSpec, TaskData

__all__ = ["make_demo_task", "demo_split_pair", "finalize_demo", "DEMO_TRAIN_EXAMPLES",
           "DEMO_EVAL_EXAMPLES"]

# Sizes generated when the spec does not set max_train_samples / max_eval_samples.
DEMO_TRAIN_EXAMPLES, DEMO_EVAL_EXAMPLES = 2000, 500

# Film-review vocabulary.  Copular verbs are negated by inserting one word ("was not", "is
# never"), so moving the negation from one clause to the other keeps the multiset of words.
_ASPECTS = (
    "the plot", "the acting", "the script", "the soundtrack", "the dialogue", "the ending",
    "the cast", "the direction", "the pacing", "the camera work", "the story", "the lead",
    "the humor", "the score", "the editing", "the finale", "the premise", "the villain",
)
_POSITIVE = (
    "good", "great", "wonderful", "brilliant", "excellent", "charming", "engaging", "clever",
    "moving", "delightful", "gripping", "impressive", "beautiful", "funny", "fresh",
    "compelling", "solid", "memorable", "superb", "enjoyable",
)
_NEGATIVE = (
    "bad", "awful", "dull", "boring", "terrible", "weak", "clumsy", "tedious", "predictable",
    "bland", "messy", "forgettable", "painful", "lifeless", "lazy", "flat", "sloppy", "shallow",
    "tiresome", "mediocre",
)
# Adjectives that only eval sentences use: the model must bring their polarity from
# pre-training, which is exactly the knowledge that pruning can destroy.
_EVAL_ONLY_POSITIVE = (
    "dazzling", "stunning", "touching", "inventive", "riveting", "witty", "masterful", "heartfelt",
)
_EVAL_ONLY_NEGATIVE = (
    "clunky", "dreary", "incoherent", "insipid", "plodding", "trite", "amateurish", "stale",
)
_COPULAS = ("was", "is")
_NEGATORS = ("not", "never")
_INTENSIFIERS = ("", "", "", "very", "really", "quite", "truly", "rather", "so")
# Label = the clause in {b}; {a} is the conceded clause of opposite polarity.
_CONTRAST = (
    "{a} but {b}", "{a} , but {b}", "{a} , yet {b}", "{a} ; however , {b}", "although {a} , {b}",
    "even though {a} , {b}", "while {a} , {b}", "{b} , although {a}", "{b} , even though {a}",
    "{b} , though {a}",
)
_AGREE = ("{a} and {b}", "{a} , and {b}", "{a} ; also , {b}")
_REPORTED = (
    "i expected it to be {adj}", "the trailer made it look {adj}", "my friends said it was {adj}",
    "critics called it {adj}", "everyone told me it would be {adj}",
)
_PREFIXES = ("honestly ,", "to be fair ,", "in the end ,", "i saw it on a sunday ,", "for me ,")
_SUFFIXES = (
    ", if you ask me", ", at least for me", ". we watched it at home", ". my brother picked it",
    ", in my opinion",
)


class _DemoGenerator:
    """Sentences whose label depends on negation scope and on which clause a contrast keeps.

    Each call to :meth:`unit` returns one or two ``(sentence, label)`` pairs.  Twin units return
    two sentences with the same multiset of words and opposite labels (clauses swapped around
    the connective, or the negation moved to the other clause), so no bag-of-words model can get
    both right.
    """

    def __init__(self, rng: np.random.Generator, *, held_out_adjectives: bool) -> None:
        self.rng = rng
        self.target = 0  # alternates so single-sentence units stay balanced
        self.positive = _POSITIVE + (_EVAL_ONLY_POSITIVE if held_out_adjectives else ())
        self.negative = _NEGATIVE + (_EVAL_ONLY_NEGATIVE if held_out_adjectives else ())

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def clause(self, polarity: int, *, negated: bool | None = None, aspect: str | None = None):
        """(words before the adjective, adjective) of a clause with the given polarity (1/0)."""
        if negated is None:
            negated = bool(self.rng.random() < 0.4)
        adj_pol = polarity if not negated else 1 - polarity
        adj = self.pick(self.positive if adj_pol else self.negative)
        verb = self.pick(_COPULAS)
        neg = self.pick(_NEGATORS) if negated else ""
        intens = self.pick(_INTENSIFIERS)
        return " ".join(w for w in (aspect or self.pick(_ASPECTS), verb, neg, intens, adj) if w)

    def two_aspects(self) -> tuple[str, str]:
        i, j = self.rng.choice(len(_ASPECTS), size=2, replace=False)
        return _ASPECTS[int(i)], _ASPECTS[int(j)]

    def wrap(self, sentence: str) -> str:
        r = self.rng.random()
        if r < 0.15:
            return f"{self.pick(_PREFIXES)} {sentence}"
        if r < 0.3:
            return f"{sentence} {self.pick(_SUFFIXES)}"
        return sentence

    def next_target(self) -> int:
        self.target = 1 - self.target
        return self.target

    def unit(self) -> list[tuple[str, int]]:
        kind = self.rng.random()
        if kind < 0.2:  # one clause: label = adjective polarity XOR negation
            y = self.next_target()
            return [(self.wrap(self.clause(y)), y)]
        if kind < 0.35:  # two clauses that agree
            y = self.next_target()
            asp_a, asp_b = self.two_aspects()
            a, b = self.clause(y, aspect=asp_a), self.clause(y, aspect=asp_b)
            return [(self.wrap(self.pick(_AGREE).format(a=a, b=b)), y)]
        if kind < 0.5:  # contrast: the kept clause decides
            y = self.next_target()
            asp_a, asp_b = self.two_aspects()
            a, b = self.clause(1 - y, aspect=asp_a), self.clause(y, aspect=asp_b)
            return [(self.wrap(self.pick(_CONTRAST).format(a=a, b=b)), y)]
        if kind < 0.6:  # a reported opinion that the sentence then overrides
            y = self.next_target()
            adj = self.pick(self.negative if y else self.positive)
            said = self.pick(_REPORTED).format(adj=adj)
            return [(self.wrap(f"{said} , but {self.clause(y)}"), y)]
        template = self.pick(_CONTRAST)
        prefix_suffix = self.wrap("{}")
        if kind < 0.8:  # twin: swap the clauses around the connective
            asp_a, asp_b = self.two_aspects()
            a, b = self.clause(0, aspect=asp_a), self.clause(1, aspect=asp_b)
            return [
                (prefix_suffix.format(template.format(a=a, b=b)), 1),
                (prefix_suffix.format(template.format(a=b, b=a)), 0),
            ]
        # twin: same two adjectives (same polarity), the negation sits in one clause or the other
        p = int(self.rng.integers(2))
        adjs = self.positive if p else self.negative
        asp_a, asp_b = self.two_aspects()
        verb_a, verb_b, neg = self.pick(_COPULAS), self.pick(_COPULAS), self.pick(_NEGATORS)
        adj_a, adj_b = self.pick(adjs), self.pick(adjs)
        int_a, int_b = self.pick(_INTENSIFIERS), self.pick(_INTENSIFIERS)

        def cl(aspect: str, verb: str, intens: str, adj: str, negated: bool) -> str:
            return " ".join(w for w in (aspect, verb, neg if negated else "", intens, adj) if w)

        a_neg, a_pos = (cl(asp_a, verb_a, int_a, adj_a, flag) for flag in (True, False))
        b_neg, b_pos = (cl(asp_b, verb_b, int_b, adj_b, flag) for flag in (True, False))
        first, second = template.format(a=a_neg, b=b_pos), template.format(a=a_pos, b=b_neg)
        # {b} decides: plain in the first sentence (label p), negated in the second (label 1-p).
        return [(prefix_suffix.format(first), p), (prefix_suffix.format(second), 1 - p)]


def _demo_examples(
    n: int, rng: np.random.Generator, exclude: set[str], *, held_out_adjectives: bool
) -> list[dict]:
    gen = _DemoGenerator(rng, held_out_adjectives=held_out_adjectives)
    seen = set(exclude)
    out: list[dict] = []
    while len(out) < n:
        unit = gen.unit()
        if any(s in seen for s, _ in unit):
            continue  # keep sentences unique within and across splits
        for s, y in unit:
            seen.add(s)
            out.append({"sentence": s, "label": y})
    out = out[:n]
    order = rng.permutation(len(out))  # twins must not sit next to each other
    return [out[i] for i in order]


def demo_split_pair(*, n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Generate the demo's train and eval records; eval excludes every train sentence and adds
    the held-out adjectives.  Train and eval draw from separate streams (``[seed, 100]`` and
    ``[seed, 101]``), so a larger eval never changes train.

    Raises:
        ValueError: a size that is not an int in ``[2, DEMO_MAX_EXAMPLES]``.
    """
    for name, n in (("n_train", n_train), ("n_eval", n_eval)):
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= DEMO_MAX_EXAMPLES:
            raise ValueError(
                f"{name} must be an int in [2, {DEMO_MAX_EXAMPLES}], got {name}={n!r}"
            )
    train = _demo_examples(
        n_train, np.random.default_rng([seed, 100]), set(), held_out_adjectives=False
    )
    evals = _demo_examples(
        n_eval,
        np.random.default_rng([seed, 101]),
        {r["sentence"] for r in train},
        held_out_adjectives=True,
    )
    return train, evals


def finalize_demo(records: tuple[list[dict], list[dict]], spec: DataSpec) -> TaskData:
    """Generated (train, eval) records -> :class:`TaskData`, with the spec's selection split."""
    train, evals = records
    fields = ["sentence", "label"]
    # The demo generates exactly the requested sizes, so no further subsampling.
    spec = DataSpec(task=DEMO_TASK, selection_fraction=spec.selection_fraction, seed=spec.seed,
                    metrics=spec.metrics, max_seq_length=spec.max_seq_length)
    return finalize_task(
        spec,
        DEMO_TASK,
        records_to_columns(train, fields),
        records_to_columns(evals, fields),
        text_fields=("sentence",),
        label_field="label",
        num_labels=2,
        label_names=("negative", "positive"),
        default_metrics=("accuracy",),
        source="demo",
        where=("demo train", "demo eval"),
    )


def make_demo_task(
    *,
    n_train: int = DEMO_TRAIN_EXAMPLES,
    n_eval: int = DEMO_EVAL_EXAMPLES,
    seed: int = 0,
    selection_fraction: float = 0.1,
) -> TaskData:
    """The built-in offline task: film-review sentiment with negation and contrast.

    Labels depend on word order, so a bag of words cannot solve it: "the plot was not good but
    the cast was bad" (negative) and "the plot was good but the cast was not bad" (positive)
    hold the same words, as do "the plot was dull but the cast was great" and "the cast was great
    but the plot was dull".  More than half of the sentences come in such twins; the rest are single
    clauses (adjective polarity flipped by "not"/"never", which no linear unigram model can
    represent), agreeing clauses, and opinions reported and then overridden.  Prefixes and
    suffixes without sentiment act as distractors.  Eval sentences also use 16 adjectives that
    train never shows ("riveting", "plodding", ...), so eval measures what the pretrained model
    knows rather than memorised templates; that knowledge is what pruning can damage.  Labels
    are balanced; sentences are unique and no eval sentence occurs in train.  The same ``seed``
    gives the same task.

    Args:
        n_train: training examples before the selection split is carved out.
        n_eval: eval examples.
        seed: generator seed (also seeds the selection split).
        selection_fraction: fraction of train held out as the selection split.
    """
    spec = DataSpec(task=DEMO_TASK, selection_fraction=selection_fraction, seed=seed)
    return finalize_demo(demo_split_pair(n_train=n_train, n_eval=n_eval, seed=seed), spec)
