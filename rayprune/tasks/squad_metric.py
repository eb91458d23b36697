"""SQuAD v1.1's exact match and F1, with the official evaluation script's semantics.

Normalise both strings (lower case, drop punctuation, drop the articles a/an/the, collapse
whitespace); exact match compares the normalised strings, F1 is the token-overlap F1 of the
normalised tokens; each question scores the best of its gold answers.  In [0, 1] like every
rayprune metric (the official script reports x100).  Written by hand: the ``evaluate`` package
downloads its metric scripts at first use, which fails offline.  Pure functions, no torch.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

import numpy as np

__all__ = ["normalize_answer", "exact_match_score", "f1_score", "token_f1", "squad_scores"]


_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, punctuation removed, the articles
    a/an/the removed, whitespace collapsed (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:  # v1.1 semantics: also 0 when both are empty
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised strings (v1.1: 0 when they share no token, even when
    both are empty)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ``exact_match`` and ``f1`` over questions, each the max over the question's gold
    answers; in [0, 1].  NaN for no questions (a metric of nothing is not 0).

    Raises:
        ValueError: ``predictions`` and ``golds`` differ in length, or a question has no gold answer.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em, f1 = [], []
    for i, (pred, answers) in enumerate(zip(predictions, golds)):
        if not answers:
            raise ValueError(f"question {i} has no gold answer")
        em.append(max(exact_match_score(pred, a) for a in answers))
        f1.append(max(f1_score(pred, a) for a in answers))
    if not em:
        return {"exact_match": float("nan"), "f1": float("nan")}
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}
