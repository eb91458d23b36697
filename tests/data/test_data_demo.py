"""The generated demo task: deterministic, balanced, cleanly split, not solvable by bag of words."""

import collections

import numpy as np

from rayprune.data import DataSpec, load_task, make_demo_task


def _sentences(examples) -> list[str]:
    return [ex["sentence"] for ex in examples]


def test_demo_is_deterministic_balanced_and_split_cleanly():
    a, b = make_demo_task(seed=0), make_demo_task(seed=0)
    assert (a.train, a.selection, a.eval) == (b.train, b.selection, b.eval)
    assert make_demo_task(seed=1).train != a.train
    train = a.train + a.selection
    assert len(train) == 2000 and len(a.selection) == 200 and len(a.eval) == 500
    assert collections.Counter(ex["label"] for ex in train) == {0: 1000, 1: 1000}
    assert 0.4 < np.mean([ex["label"] for ex in a.eval]) < 0.6
    sentences = _sentences(train)
    assert len(set(sentences)) == len(sentences)
    assert not set(sentences) & set(_sentences(a.eval))
    # Eval also uses adjectives train never shows; nothing else is new.
    from rayprune.data.demo import _EVAL_ONLY_NEGATIVE, _EVAL_ONLY_POSITIVE

    train_words = {w for s in sentences for w in s.split()}
    unseen = {w for s in _sentences(a.eval) for w in s.split()} - train_words
    assert unseen == set(_EVAL_ONLY_POSITIVE + _EVAL_ONLY_NEGATIVE)

    spec_task = load_task(DataSpec(task="demo", max_train_samples=300, max_eval_samples=60))
    assert len(spec_task.train) + len(spec_task.selection) == 300 and len(spec_task.eval) == 60


def _bow(sentence: str) -> tuple:
    return tuple(sorted(sentence.split()))


def test_demo_is_not_solvable_by_bag_of_words():
    task = make_demo_task(seed=0)
    examples = task.train + task.selection + task.eval
    # Best accuracy ANY function of the word multiset can reach: the majority label of each
    # group of examples that share a multiset.
    groups = collections.defaultdict(list)
    for ex in examples:
        groups[_bow(ex["sentence"])].append(ex["label"])
    ceiling = sum(max(collections.Counter(g).values()) for g in groups.values()) / len(examples)
    assert ceiling < 0.8
    assert sum(1 for g in groups.values() if len(set(g)) == 2) > 300  # same words, both labels

    # A unigram logistic regression fit on train (gradient descent) stays far below that.
    train, evals = task.train + task.selection, task.eval
    words = sorted({w for ex in examples for w in ex["sentence"].split()})
    vocab = {w: i for i, w in enumerate(words)}

    def features(rows):
        x = np.zeros((len(rows), len(vocab)))
        for k, ex in enumerate(rows):
            for w in ex["sentence"].split():
                x[k, vocab[w]] += 1.0
        return x

    x, y = features(train), np.array([ex["label"] for ex in train], dtype=float)
    w, b = np.zeros(len(vocab)), 0.0
    for _ in range(2000):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w -= 0.5 * (x.T @ (p - y) / len(y))
        b -= 0.5 * float(np.mean(p - y))
    train_acc = np.mean((x @ w + b > 0) == y)
    eval_acc = np.mean((features(evals) @ w + b > 0) == np.array([ex["label"] for ex in evals]))
    assert train_acc < 0.7 and eval_acc < 0.65
