"""Token classification (NER): readers and their bad input, IOB handling, sub-word alignment, the
conlleval metric on hand-computed cases, the CoNLL baseline floor, distillation, a trial through
the real loop and an export served by ``transformers.pipeline``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from helpers import SHARED
from rayprune.data import DataSpec, load_task, tokenize_task
from rayprune.data.conll import read_conll, to_iob2
from rayprune.models import load_model_and_tokenizer
from rayprune.tasks import get_task, task_from_info
from rayprune.tasks.classification import logits_distillation_loss
from rayprune.tasks.token_classification import (
    TokenClassificationTask,
    entities,
    entity_scores,
    unique_tag_lexicon,
)

BTC = SHARED / "data" / "ner" / "btc"
NO_BTC = f"BTC not found at {BTC} (the ../shared checkout is absent)"


def write(path, text: str, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return str(path)


def ner_spec(train, evals, **changes) -> DataSpec:
    return DataSpec(task_type="token_classification", train_files=[train], eval_files=[evals],
                    selection_fraction=0.0, **changes)


# Tiny tagged sentences: every entity type in train, eval drawn from the same words.
TRAIN_CONLL = """Alice\tB-PER
Smith\tI-PER
works\tO
for\tO
Google\tB-ORG
in\tO
Paris\tB-LOC
.\tO

Bob\tB-PER
visited\tO
London\tB-LOC
.\tO

Microsoft\tB-ORG
hired\tO
Alice\tB-PER
.\tO
"""
EVAL_CONLL = """Bob\tB-PER
works\tO
for\tO
Microsoft\tB-ORG
in\tO
London\tB-LOC
.\tO
"""


# ------------------------------------------------------------------------------ the metric


def test_entities_follow_conlleval():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entities(["O", "I-PER", "I-PER"]) == [("PER", 1, 2)]           # I- after O starts one
    assert entities(["I-LOC"]) == [("LOC", 0, 0)]                         # ... as at the start
    assert entities(["B-PER", "I-ORG", "I-ORG"]) == [("PER", 0, 0), ("ORG", 1, 2)]  # type change splits
    assert entities(["B-PER", "I-PER", "B-PER"]) == [("PER", 0, 1), ("PER", 2, 2)]  # B- splits
    assert entities(["O", "O"]) == []


def test_entity_scores_hand_computed():
    # boundary mismatch (PER 0-1 vs 0-0) and type mismatch (LOC vs ORG): nothing is right
    s = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-ORG"]])
    assert (s.correct, s.predicted, s.gold) == (0, 2, 2) and (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    # two of three gold entities found, no false positive: P 1, R 2/3, F1 0.8
    s = entity_scores([["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]],
                      [["B-PER", "I-PER", "O", "B-LOC", "O", "O"]])
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(0.8)
    assert s.per_type == {"LOC": (1.0, 1.0, 1.0, 1), "ORG": (0.0, 0.0, 0.0, 1), "PER": (1.0, 1.0, 1.0, 1)}
    # an entity split by a wrong I-: two predicted entities, neither right
    s = entity_scores([["B-PER", "I-PER"]], [["B-PER", "I-ORG"]])
    assert (s.correct, s.predicted, s.gold) == (0, 2, 1)
    # an I- after O that starts the entity at the right place counts as right (conlleval)
    s = entity_scores([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert s.f1 == 1.0
    # across sentences: the same span in another sentence is another entity
    s = entity_scores([["B-PER"], ["O"]], [["O"], ["B-PER"]])
    assert (s.correct, s.predicted, s.gold) == (0, 1, 1)
    # no entity anywhere: conlleval's 0, with the listed types present in per_type
    s = entity_scores([["O"]], [["O"]], types=["PER"])
    assert s.f1 == 0.0 and s.per_type == {"PER": (0.0, 0.0, 0.0, 0)}
    assert s.as_metrics(["f1", "precision"]) == {"f1": 0.0, "precision": 0.0, "f1/PER": 0.0}


def test_iob1_to_iob2():
    tags, changed = to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"])
    assert tags == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"] and changed == 3
    assert to_iob2(["B-PER", "I-PER", "O"]) == (["B-PER", "I-PER", "O"], 0)


# ------------------------------------------------------------------------------ readers


def test_conll2003_original_format_loads_as_iob1(tmp_path):
    """eng.* as distributed: -DOCSTART- lines, 4 space-separated columns, IOB1 tags."""
    train = write(tmp_path / "eng.train", """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

In IN I-PP O
Europe NNP I-NP I-LOC
, , O O
Germany NNP I-NP I-LOC
Berlin NNP I-NP B-LOC
""")
    testa = write(tmp_path / "eng.testa", """-DOCSTART- -X- -X- O

CRICKET NNP I-NP O
LEICESTERSHIRE NNP I-NP I-ORG
TAKE NNP I-NP O
""")
    task = load_task(ner_spec(train, testa, task_options={"tag_scheme": "iob1"}))
    assert task.label_names == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    names = task.label_names
    assert [[names[t] for t in ex["tags"]] for ex in task.train] == [
        ["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["O", "B-LOC", "O", "B-LOC", "B-LOC"]]
    assert task.train[2]["tokens"] == ["In", "Europe", ",", "Germany", "Berlin"]
    assert [names[t] for t in task.eval[0]["tags"]] == ["O", "B-ORG", "O"]
    assert not any("I- tags" in n for n in task.notes)  # IOB1's rule, not a repair
    assert task.metrics == ("f1", "precision", "recall") and task.task.options == {"tag_scheme": "iob1"}


def test_iob2_repairs_an_entity_starting_with_i_and_counts_it(tmp_path):
    train = write(tmp_path / "a.conll", "Alice\tI-PER\nSmith\tI-PER\nsays\tO\nhi\tO\n\nBob\tB-PER\n")
    task = load_task(ner_spec(train, train))
    names = task.label_names
    assert [names[t] for t in task.train[0]["tags"]] == ["B-PER", "I-PER", "O", "O"]
    assert any(n.startswith("train: 1 I- tags start an entity") for n in task.notes)


def test_btc_quirks_empty_tokens_trailing_spaces_whitespace_separator(tmp_path):
    train = write(tmp_path / "t.train",
                  "a\tO\n\tO\n \tO\nb \tB-PER\n \n@\tB-ORG\nX\tB-ORG\n\t\n\nc\tO\n")
    conll = read_conll(train)
    assert [s.tokens for s in conll.sentences] == [["a", "b"], ["@", "X"], ["c"]]
    assert conll.empty_tokens == 2 and [s.line for s in conll.sentences] == [1, 6, 10]
    task = load_task(ner_spec(train, train))
    assert "train: dropped 2 empty tokens (lines with a tag and no token)" in task.notes
    assert any("eval: 1 of 3 entities (33%) are a lone '@' token" in n for n in task.notes)


@pytest.mark.parametrize("text, message", [
    ("a\tO\nb\tX\tO\n", r"b\.conll:2: 3 columns, but line 1 has 2"),
    ("a O\nb\n", r"b\.conll:2: a token line needs a token and a tag"),
    ("a\tO\nb\tPER\n", r"b\.conll:2: tag 'PER' is not O, B-<type> or I-<type>"),
    ("a\tS-PER\n", r"b\.conll:1: tag 'S-PER'"),
    ("\n\n", r"b\.conll: no sentences"),
])
def test_bad_conll_lines_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_conll(write(tmp_path / "b.conll", text))


def test_non_utf8_file_is_one_error_naming_it(tmp_path):
    path = tmp_path / "latin.conll"
    path.write_bytes("ok\tO\n\nM\xfcller\tB-PER\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.conll:3: not UTF-8 text \(byte 0xfc"):
        load_task(ner_spec(str(path), str(path)))


def test_eval_type_missing_from_train_is_an_error(tmp_path):
    train = write(tmp_path / "train.conll", TRAIN_CONLL)
    evals = write(tmp_path / "dev.conll", "Rome\tB-LOC\nis\tO\n\nthe\tO\nEuro\tB-MISC\n")
    with pytest.raises(ValueError, match=r"dev\.conll:4: entity type 'MISC' \(tag 'B-MISC'\) never occurs in the "
                                         r"training data"):
        load_task(ner_spec(train, evals))


def test_json_lines_with_string_tags(tmp_path):
    rows = [{"tokens": ["Alice", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]},
            {"tokens": ["in", "Oslo", ""], "tags": ["O", "B-LOC", "O"]}]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    task = load_task(ner_spec(str(path), str(path)))
    assert task.label_names == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert task.train[1] == {"tokens": ["in", "Oslo"], "tags": [0, 1], "text": "in Oslo"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 0: 2 tokens but 1 tags"):
        load_task(ner_spec(str(bad), str(bad)))


def _classlabel_dataset(names, rows):
    import datasets

    features = datasets.Features({"id": datasets.Value("string"),
                                  "tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    return datasets.Dataset.from_dict({"id": [str(i) for i in range(len(rows))], "tokens": [r[0] for r in rows],
                                       "ner_tags": [r[1] for r in rows]}, features=features)


CONLL2003_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def test_parquet_with_class_label_ids_keeps_the_dataset_names(tmp_path):
    rows = [(["EU", "rejects", "German", "call"], [3, 0, 7, 0]), (["Peter", "Blackburn"], [1, 2]),
            (["BRUSSELS"], [5])]
    path = tmp_path / "train.parquet"
    _classlabel_dataset(CONLL2003_NAMES, rows).to_parquet(str(path))
    task = load_task(ner_spec(str(path), str(path)))
    assert task.label_names == tuple(CONLL2003_NAMES)  # ids stay the dataset's
    assert [ex["tags"] for ex in task.train] == [r[1] for r in rows]


def test_hub_dataset_wnut17_shape(monkeypatch):
    """A hub dataset shaped like wnut_17 (tokens + ner_tags class ids); a fake load_dataset stands in."""
    import datasets

    names = ["O", "B-corporation", "I-corporation", "B-person", "I-person", "B-location", "I-location"]
    split = _classlabel_dataset(names, [(["@paul", "loves", "Apple", "Inc"], [3, 0, 1, 2]),
                                        (["in", "NYC"], [0, 5])])
    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return datasets.DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task(DataSpec(task_type="token_classification", dataset="wnut_17", selection_fraction=0.0))
    assert calls == [("wnut_17", None)] and task.label_names == tuple(names)
    assert task.eval[0]["tags"] == [3, 0, 1, 2] and task.source == "hub:wnut_17[train,validation]"


def test_eval_fraction_keeps_documents_whole(tmp_path):
    docs = "".join(f"-DOCSTART- O\n\nw{d}a\tB-PER\n\nw{d}b\tO\n\n" for d in range(6))
    path = write(tmp_path / "all.conll", docs)
    spec = DataSpec(task_type="token_classification", train_files=[path], eval_fraction=0.5,
                    group_field="document", selection_fraction=0.0)
    task = load_task(spec)
    doc_of = lambda ex: ex["tokens"][0][1]  # noqa: E731
    assert {doc_of(ex) for ex in task.train}.isdisjoint({doc_of(ex) for ex in task.eval})
    assert len(task.train) == len(task.eval) == 6 and "3 of 6 groups by 'document'" in task.notes[0]


def test_options_checked():
    with pytest.raises(ValueError, match=r"tag_scheme must be one of \['iob2', 'iob1'\], got 'bilou'"):
        DataSpec(task_type="token_classification", train_files=["a.conll"], eval_files=["b.conll"],
                 task_options={"tag_scheme": "bilou"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['label_all_tokens'\]"):
        TokenClassificationTask.check_options({"label_all_tokens": True})
    assert TokenClassificationTask.check_options(None) == {"tag_scheme": "iob2"}


# ------------------------------------------------------------------------------ tokens, floor, loss


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    task = load_task(ner_spec(write(folder / "train.conll", TRAIN_CONLL), write(folder / "dev.conll", EVAL_CONLL)))
    model, tokenizer = load_model_and_tokenizer("bundled:minilm-l6", task=task.task)
    return task, model, tokenizer


def test_labels_on_first_subword_only_and_truncated_words_predicted_o(small):
    task, model, tokenizer = small
    data = tokenize_task(task, tokenizer, max_seq_length=32)
    row = task.train[0]
    enc = tokenizer(row["tokens"], is_split_into_words=True)
    first = {}
    for position, word in enumerate(enc.word_ids()):
        if word is not None:
            first.setdefault(word, position)
    expected = np.full(len(enc["input_ids"]), -100)
    for word, position in first.items():
        expected[position] = row["tags"][word]
    assert data.train.labels[0, : len(expected)].tolist() == expected.tolist()
    assert (data.train.labels[0, len(expected):] == -100).all()
    # 5 tokens keep [CLS] + 3 sub-words + [SEP]: the later words are predicted O (id 0)
    short = tokenize_task(task, tokenizer, max_seq_length=5)
    predicted = task.task.word_predictions(model, short.eval, batch_size=4)[0]
    assert len(predicted) == 7 and (predicted[3:] == task.task.outside_id).all()
    assert any(n.startswith("eval: 4 words beyond max_seq_length=5") for n in task.notes)


def test_batches_cut_per_word_labels_to_contiguous_tensors():
    """Hugging Face's token-classification loss calls labels.view(-1): a strided column slice of
    the (n, L) label array would fail there."""
    from rayprune.data.tokenize import TokenizedSplit

    attention = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.int8)
    labels = np.where(attention == 1, 1, -100).astype(np.int64)
    split = TokenizedSplit(attention.astype(np.int32), attention, None, labels)
    first = next(split.batches(2, shuffle=False))  # width 2 of 4
    assert first["labels"].shape == (2, 2) and first["labels"].is_contiguous()
    assert first["labels"].view(-1).tolist() == [1, 1, 1, 1]


def test_floor_is_the_unique_tag_baseline(small):
    task, _, tokenizer = small
    data = tokenize_task(task, tokenizer, max_seq_length=32)
    names = task.label_names
    lexicon = {w: names[t] for w, t in unique_tag_lexicon([(ex["tokens"], ex["tags"]) for ex in task.train]).items()}
    assert lexicon["Bob"] == "B-PER" and lexicon["works"] == "O" and "Alice" in lexicon
    # eval "Bob works for Microsoft in London .": Bob, Microsoft, London each seen with one tag -> 3 of 3
    assert task.task.floor("f1", data) == 1.0
    # a word seen with two tags is O; an unseen word is O
    mixed = TokenClassificationTask(metrics=("f1",), label_names=("O", "B-PER", "I-PER"))
    assert unique_tag_lexicon([(["Jo", "x"], [1, 0]), (["Jo"], [0])]) == {"x": 0}
    assert mixed.floor_description().startswith("the CoNLL baseline")


def test_evaluate_reports_metrics_and_per_type_f1(small):
    task, model, tokenizer = small
    data = tokenize_task(task, tokenizer, max_seq_length=32)
    metrics = task.task.evaluate(model, data.eval, batch_size=2)
    assert list(metrics)[:3] == ["f1", "precision", "recall"]
    assert set(metrics) == {"f1", "precision", "recall", "f1/LOC", "f1/ORG", "f1/PER"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert task.task.per_type_f1(model, data.eval, 2) == {k[3:]: v for k, v in metrics.items() if k.startswith("f1/")}
    assert task.task.eval_size(data.eval) == 3
    sample = task.task.predictions_sample(model, data.eval, limit=10)
    assert len(sample) == 1 and sample[0]["gold"] == "PER: Bob; ORG: Microsoft; LOC: London"
    assert sample[0]["text"] == "Bob works for Microsoft in London ."


def test_distillation_uses_labelled_tokens_only(small):
    task, _, _ = small
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=gen), torch.randn(2, 5, 7, generator=gen)
    labels = torch.tensor([[-100, 1, -100, 0, -100], [-100, 2, 3, -100, -100]])
    out = lambda logits: type("Out", (), {"logits": logits})()  # noqa: E731
    loss = task.task.distillation_loss(out(student), out(teacher), {"labels": labels}, 2.0)
    mask = labels != -100
    assert torch.allclose(loss, logits_distillation_loss(student[mask], teacher[mask], 2.0))
    changed = teacher.clone()
    changed[~mask] = 100.0  # what the teacher says at unlabelled positions does not matter
    assert torch.allclose(task.task.distillation_loss(out(student), out(changed), {"labels": labels}, 2.0), loss)
    none = torch.full_like(labels, -100)
    assert task.task.distillation_loss(out(student), out(teacher), {"labels": none}, 2.0).item() == 0.0


def test_head_and_info_round_trip(small):
    task, model, _ = small
    config = task.task.model_config()
    assert config["id2label"][0] == "O" and config["label2id"]["B-PER"] == task.label_names.index("B-PER")
    assert type(model).__name__ == "BertForTokenClassification" and model.config.num_labels == 7
    rebuilt = task_from_info(task.task.to_info())
    assert isinstance(rebuilt, TokenClassificationTask) and rebuilt == task.task
    assert get_task("token_classification") is TokenClassificationTask
    assert 'aggregation_strategy="simple"' in rebuilt.card_usage("out/model")


# ------------------------------------------------------------------------------ real BTC files


@pytest.mark.skipif(not BTC.is_dir(), reason=NO_BTC)
def test_btc_files_read_as_documented():
    """Counts from SOURCES.md: 6,338 / 1,001 / 2,001 tweets (the test file's separator line is a
    single space), 99,933 / 15,027 / 35,428 tokens less the empty ones: dev's 3 ``\tO`` lines and
    its `` \tO`` (one of them a "tweet" of its own, line 15426, so 1,000 tweets remain), test's
    2 ``\tO`` and 1 `` \tO``."""
    counts = {}
    for name in ("train", "dev", "test"):
        conll = read_conll(BTC / f"btc.{name}")
        counts[name] = (len(conll.sentences), sum(len(s.tokens) for s in conll.sentences), conll.empty_tokens,
                        conll.empty_sentences)
    assert counts == {"train": (6338, 99933, 0, 0), "dev": (1000, 15027 - 4, 4, 1), "test": (2001, 35428 - 3, 3, 0)}


@pytest.mark.skipif(not BTC.is_dir(), reason=NO_BTC)
def test_btc_task_notes_and_floor():
    spec = ner_spec(str(BTC / "btc.train"), str(BTC / "btc.dev"), max_train_samples=1500)
    task = load_task(spec)
    assert task.label_names == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    assert len(task.eval) == 1000 and len(task.train) + len(task.selection) == 1500
    assert ("eval: dropped 4 empty tokens (lines with a tag and no token), and so 1 sentences that had no other "
            "token") in task.notes
    assert any(n.startswith("eval: 604 of 1730 entities (35%) are a lone '@' token") for n in task.notes)
    assert not any("I- tags" in n for n in task.notes)  # SOURCES.md: valid IOB2
    _, tokenizer = load_model_and_tokenizer("bundled:minilm-l6", task=task.task)
    data = tokenize_task(task, tokenizer, max_seq_length=64)
    floor = task.task.floor("f1", data)
    assert 0.0 < floor < 0.5 and task.task.eval_size(data.eval) == 1730


# ------------------------------------------------------------------------------ loop and export


MEMORISE = [
    ("Alice Smith works for Google in Paris .", "B-PER I-PER O O B-ORG O B-LOC O"),
    ("Bob Jones visited London with Microsoft .", "B-PER I-PER O B-LOC O B-ORG O"),
    ("Google hired Alice Smith in Berlin .", "B-ORG O B-PER I-PER O B-LOC O"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny config-built BERT trained through run_training (magnitude pruning to 30%) until it
    knows three sentences by heart, and exported as a Hugging Face directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rayprune.models import resolve_model_path
    from rayprune.training import TrialConfig, TrialSettings, run_training

    folder = tmp_path_factory.mktemp("ner-loop")
    text = "\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.split(), tags.split())) + "\n" for s, tags in MEMORISE)
    path = write(folder / "train.conll", text * 4)
    task = load_task(ner_spec(path, path, max_seq_length=32))
    # A bare encoder (no head): helpers.save_tiny_bert's sequence classifier has a `classifier`
    # of another shape, which the token-classification head of the same name cannot load over.
    model_dir = str(folder / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=64)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _, tokenizer = load_model_and_tokenizer(model_dir, task=task.task)
    data = tokenize_task(task, tokenizer)
    settings = TrialSettings(model=model_dir, metric="f1", steps=120, batch_size=4, eval_interval=60, threads=1,
                             learning_rate=3e-3, warmup_ratio=0.0)
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.3}, settings)
    model, method, metrics = run_training(config, settings, data)
    export = folder / "export"
    (method.finalize() if method is not None else model).save_pretrained(export)
    tokenizer.save_pretrained(export)
    return data, settings, metrics, str(export)


def test_trial_through_the_loop_reports_finite_f1(trained):
    _, _, metrics, _ = trained
    assert math.isfinite(metrics["f1"]) and 0.0 <= metrics["f1"] <= 1.0
    assert metrics["f1"] > 0.5 and metrics["sparsity"] > 0.25


def test_trial_reports_entity_precision_and_recall(trained):
    _, _, metrics, _ = trained
    assert isinstance(metrics["precision"], float) and 0.0 <= metrics["recall"] <= 1.0


def test_distillation_from_a_token_classifier_teacher_runs(trained):
    from rayprune.training import TrialConfig, run_training

    data, settings, _, export = trained
    settings = type(settings)(**{**settings.__dict__, "steps": 4, "eval_interval": 4, "teacher_dir": export})
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.3, "distill.alpha": 0.5}, settings)
    _, _, metrics = run_training(config, settings, data)
    assert math.isfinite(metrics["f1"]) and math.isfinite(metrics["train_loss"])


def test_export_serves_named_entity_groups_in_a_pipeline(trained):
    from transformers import pipeline

    _, _, _, export = trained
    ner = pipeline("token-classification", model=export, aggregation_strategy="simple", device="cpu")
    groups = ner(MEMORISE[0][0])
    assert {g["entity_group"] for g in groups} == {"PER", "ORG", "LOC"}
    assert [(g["entity_group"], g["word"]) for g in groups] == [("PER", "alice smith"), ("ORG", "google"),
                                                                ("LOC", "paris")]
