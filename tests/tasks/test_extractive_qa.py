"""Task extractive_qa: SQuAD reading and repairs, windows and their labels, post-processing, the
official-semantics metrics, the floor, distillation, training end to end and the exported model in
the model card's snippet.  Tiny hand-written SQuAD files; the real dev file where ../shared is present."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SHARED
from rayprune.data import DataSpec, load_task, tokenize_task
from rayprune.tasks.extractive_qa import (
    ExtractiveQATask,
    best_spans,
    exact_match_score,
    f1_score,
    normalize_answer,
    repair_answer_start,
    squad_scores,
)

SQUAD_DEV = SHARED / "data" / "squad" / "v1.1" / "dev-v1.1.json"
NO_SQUAD_REASON = f"real SQuAD dev file not found at {SQUAD_DEV} (the ../shared checkout is absent)"

CONTEXTS = {
    "Paris": "Paris is the capital of France. It lies on the Seine river and has about two million people.",
    "Moon": "The Moon orbits the Earth once every 27 days. Neil Armstrong walked on it in 1969.",
    "Rust": "Rust is a programming language first released in 2015. It was started by Graydon Hoare.",
    "Tea": "Tea is drunk all over the world. Green tea comes from China and black tea from India.",
}
QUESTIONS = {
    "Paris": [("What is the capital of France?", "Paris"), ("Which river runs through Paris?", "Seine")],
    "Moon": [("Who walked on the Moon?", "Neil Armstrong"), ("When did he walk on it?", "1969")],
    "Rust": [("When was Rust first released?", "2015"), ("Who started Rust?", "Graydon Hoare")],
    "Tea": [("Where does green tea come from?", "China"), ("Where does black tea come from?", "India")],
}


def squad_doc(titles=tuple(CONTEXTS), *, offset_error: int = 0, copies: int = 1) -> dict:
    """A SQuAD v1.1 document: one paragraph per title, its questions ``copies`` times;
    ``offset_error`` shifts every answer_start by that many characters."""
    data = []
    for title in titles:
        context = CONTEXTS[title]
        qas = [{"id": f"{title}-{i}-{c}", "question": q,
                "answers": [{"text": a, "answer_start": context.index(a) + offset_error}]}
               for c in range(copies) for i, (q, a) in enumerate(QUESTIONS[title])]
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def write(path: Path, doc) -> str:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def qa_spec(train, eval=None, **kw) -> DataSpec:
    base = dict(task="squad", train_files=[train], max_seq_length=64, selection_fraction=0.0)
    if eval is not None:
        base["eval_files"] = [eval]
    return DataSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def tokenizer():
    from rayprune.models import load_model_and_tokenizer

    _, tok = load_model_and_tokenizer("bundled:minilm-l6", task=ExtractiveQATask(metrics=("f1",)))
    return tok


# ====================================================================================== metrics


@pytest.mark.parametrize("pred, gold, em, f1", [
    ("the Denver Broncos", "Denver Broncos", 1.0, 1.0),            # article dropped
    ("Denver Broncos!", "denver broncos", 1.0, 1.0),                # punctuation and case only
    ("an apple", "a  apple", 1.0, 1.0),                             # articles and whitespace
    ("Denver", "Denver Broncos", 0.0, 2 * (1 * 0.5) / 1.5),        # P 1, R 1/2 -> 2/3
    ("Broncos of Denver", "Denver Broncos", 0.0, 2 * (2 / 3 * 1) / (2 / 3 + 1)),  # P 2/3, R 1 -> 0.8
    ("", "Denver Broncos", 0.0, 0.0),                               # empty prediction
    ("", "the", 1.0, 0.0),                                          # both normalise to "": EM 1, v1.1 F1 0
    ("a-b", "ab", 1.0, 1.0),                                        # punctuation inside a word is removed
])
def test_metric_edge_cases_match_hand_computed_values(pred, gold, em, f1):
    assert exact_match_score(pred, gold) == em
    assert f1_score(pred, gold) == pytest.approx(f1)


def test_each_question_scores_its_best_gold_answer_and_the_mean_is_in_0_1():
    scores = squad_scores(["Denver", "in 1969", ""],
                          [["Denver Broncos", "Denver"], ["1969", "July 1969"], ["anything"]])
    # q1: EM 1 (second gold); q2: EM 0, F1 max(2/3 vs "1969", 2*(1/2*1/2)/1=0.5 vs "July 1969") = 2/3; q3: 0.
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert normalize_answer("  The  Quick, brown FOX. ") == "quick brown fox"
    assert math.isnan(squad_scores([], [])["f1"])


def test_metric_needs_a_gold_answer():
    with pytest.raises(ValueError, match="question 0 has no gold answer"):
        squad_scores(["x"], [[]])


# ====================================================================================== options


def test_options_are_checked_with_clear_errors():
    assert ExtractiveQATask.check_options(None) == {"doc_stride": None, "max_answer_length": 30, "n_best_size": 20}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stride'\].*allowed: \['doc_stride'"):
        ExtractiveQATask.check_options({"stride": 3})
    for bad in ({"n_best_size": 0}, {"max_answer_length": 2.5}, {"doc_stride": True}):
        with pytest.raises(ValueError, match=r"data.task_options\.\w+ must be an int >= 1"):
            DataSpec(task="squad", train_files=["x.json"], eval_files=["y.json"], task_options=bad)


def test_doc_stride_not_below_max_seq_length_is_one_clear_error(tmp_path):
    f = write(tmp_path / "s.json", squad_doc())
    spec = qa_spec(f, f, max_seq_length=64, task_options={"doc_stride": 64})
    with pytest.raises(ValueError, match=r"^data.task_options.doc_stride=64 must be smaller than "
                                         r"data.max_seq_length=64"):
        load_task(spec)


def test_doc_stride_leaving_no_room_for_the_question_is_refused_at_tokenize(tmp_path, tokenizer):
    f = write(tmp_path / "s.json", squad_doc())
    task = load_task(qa_spec(f, f, max_seq_length=64, task_options={"doc_stride": 62}))
    with pytest.raises(ValueError, match=r"doc_stride=62 leaves no room for the question.*at most 59"):
        tokenize_task(task, tokenizer)


def test_qa_metrics_asked_of_a_classification_task_are_refused_and_the_reverse():
    with pytest.raises(ValueError, match=r"metrics must be a non-empty list from .*'accuracy'.*"
                                         r"task_type 'classification'.*exact_match"):
        DataSpec(task="sst2", metrics=["exact_match"])
    with pytest.raises(ValueError, match=r"metrics must be a non-empty list from \['f1', 'exact_match'\] "
                                         r"\(task_type 'extractive_qa'\)"):
        DataSpec(task="squad", train_files=["a.json"], eval_files=["b.json"], metrics=["accuracy"])


# ====================================================================================== reading


def test_a_squad_file_loads_with_default_metrics_and_the_task_round_trips(tmp_path):
    f = write(tmp_path / "s.json", squad_doc())
    task = load_task(qa_spec(f, f))
    assert task.name == "squad" and task.metrics == ("f1", "exact_match")
    assert len(task.train) == len(task.eval) == 8 and task.notes == []
    ex = task.train[0]
    assert ex["title"] == "Paris" and ex["answers"] == {"text": ["Paris"], "answer_start": [0]}
    from rayprune.tasks import task_from_info

    again = task_from_info(task.task.to_info())
    assert isinstance(again, ExtractiveQATask) and again == task.task


def test_wrong_answer_start_is_repaired_to_the_nearest_occurrence_and_counted(tmp_path):
    assert repair_answer_start("ab x ab", "ab", 4) == 5  # nearest of 0 and 5
    assert repair_answer_start("ab x ab", "ab", 1) == 0
    assert repair_answer_start("ab x ab", "zz", 0) is None
    f = write(tmp_path / "s.json", squad_doc(offset_error=2))
    task = load_task(qa_spec(f, f))
    assert all(ex["context"][s:s + len(t)] == t for ex in task.train + task.eval
               for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"]))
    assert any("8 answer_start values did not point at their answer text" in n and "train_files" in n
               for n in task.notes)
    assert any("8 answer_start values" in n and "eval_files" in n for n in task.notes)


def test_questions_without_answers_and_unfound_answers_are_dropped_and_counted(tmp_path):
    doc = squad_doc()
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    qas.append({"id": "noans", "question": "Is it big?", "answers": [], "is_impossible": True})
    qas.append({"id": "gone", "question": "What?", "answers": [{"text": "not in context", "answer_start": 3}]})
    f = write(tmp_path / "s.json", doc)
    task = load_task(qa_spec(f, f))
    ids = {ex["id"] for ex in task.train}
    assert "noans" not in ids and "gone" not in ids and len(task.train) == 8
    assert any("1 questions without an answer dropped, 1 marked is_impossible" in n and "train_files" in n
               for n in task.notes)
    assert any("1 answers whose text does not occur in their context dropped (cannot be labelled), "
               "1 questions left without an answer dropped" in n for n in task.notes)
    # eval: the unanswerable one is dropped too; the unfound gold text stays (the metric reads text only).
    eval_ids = {ex["id"] for ex in task.eval}
    assert "noans" not in eval_ids and "gone" in eval_ids
    assert any("kept as gold text" in n and "eval_files" in n for n in task.notes)


def test_a_file_with_no_answerable_question_is_an_error(tmp_path):
    doc = squad_doc(("Paris",))
    for qa in doc["data"][0]["paragraphs"][0]["qas"]:
        qa["answers"] = []
    f = write(tmp_path / "empty.json", doc)
    good = write(tmp_path / "s.json", squad_doc())
    with pytest.raises(ValueError, match=r"empty\.json.*no answerable questions left.*2 questions without"):
        load_task(qa_spec(good, f))


def test_non_utf8_bytes_are_one_clear_error_naming_the_file(tmp_path):
    bad = tmp_path / "latin1.json"
    bad.write_bytes(json.dumps(squad_doc()).replace("France", "Fr\u00e4nce").encode("latin-1"))
    good = write(tmp_path / "s.json", squad_doc())
    with pytest.raises(ValueError, match=r"eval_files: '.*latin1\.json' is not UTF-8 text: byte 0xe4 at offset"):
        load_task(qa_spec(good, str(bad)))


def test_datasets_style_jsonl_records_load_like_the_squad_json(tmp_path):
    lines = []
    for title, context in CONTEXTS.items():
        for i, (q, a) in enumerate(QUESTIONS[title]):
            lines.append(json.dumps({"id": f"{title}{i}", "title": title, "context": context, "question": q,
                                     "answers": {"text": [a], "answer_start": [context.index(a)]}}))
    jl = tmp_path / "s.jsonl"
    jl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = load_task(DataSpec(task_type="extractive_qa", train_files=[str(jl)], eval_files=[str(jl)],
                              max_seq_length=64, selection_fraction=0.0))
    assert task.name == "s" and len(task.train) == 8
    assert task.train[3]["answers"] == {"text": ["1969"], "answer_start": [CONTEXTS["Moon"].index("1969")]}
    missing = tmp_path / "m.jsonl"
    missing.write_text(json.dumps({"question": "q", "context": "c"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"column 'answers' not found in .*m\.jsonl.*available columns"):
        load_task(DataSpec(task_type="extractive_qa", train_files=[str(missing)], eval_files=[str(jl)]))


def test_hub_dataset_goes_through_the_hub_loader(monkeypatch):
    """``dataset: rajpurkar/squad`` reaches ``datasets.load_dataset`` through the hub source's code
    path (a fake stands in for the network, as in tests/data/test_data_hub.py)."""
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        cols = {"id": [], "title": [], "context": [], "question": [], "answers": []}
        for title, context in CONTEXTS.items():
            for i, (q, a) in enumerate(QUESTIONS[title]):
                for k, v in zip(cols, (f"{title}{i}", title, context, q,
                                       {"text": [a], "answer_start": [context.index(a)]})):
                    cols[k].append(v)
        split = datasets.Dataset.from_dict(cols)
        return datasets.DatasetDict({"train": split, "validation": split.select(range(3))})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task(DataSpec(task="squad", selection_fraction=0.25))
    assert calls == [("rajpurkar/squad", None)]
    assert task.source == "hub:rajpurkar/squad[train,validation]"
    assert len(task.train) == 6 and len(task.selection) == 2 and len(task.eval) == 3
    load_task(DataSpec(dataset="rajpurkar/squad", task_type="extractive_qa"))
    assert calls[-1] == ("rajpurkar/squad", None)


def test_eval_carved_by_title_keeps_every_article_on_one_side_and_is_deterministic(tmp_path):
    f = write(tmp_path / "s.json", squad_doc(copies=3))
    spec = qa_spec(f, None, eval_fraction=0.5, group_field="title", seed=7)
    a, b = load_task(spec), load_task(spec)
    assert [ex["id"] for ex in a.eval] == [ex["id"] for ex in b.eval]
    train_titles, eval_titles = {ex["title"] for ex in a.train}, {ex["title"] for ex in a.eval}
    assert not train_titles & eval_titles and len(eval_titles) == 2 and len(a.eval) == 12
    assert any("2 of 4 groups by 'title'" in n for n in a.notes)


def test_a_split_rule_that_leaves_one_side_empty_is_an_error(tmp_path):
    f = write(tmp_path / "one.json", squad_doc(("Paris",)))
    with pytest.raises(ValueError, match=r"one\.json.*needs at least 2 distinct 'title' values.*found 1"):
        load_task(qa_spec(f, None, eval_fraction=0.3, group_field="title"))
    with pytest.raises(ValueError, match=r"group_field 'article' is not a field of the rows"):
        load_task(qa_spec(f, None, eval_fraction=0.3, group_field="article"))


# ====================================================================================== windows


def long_context_doc() -> dict:
    filler = " ".join(f"word{i}" for i in range(120))
    context = f"{filler} The treasure is buried under the old oak tree. {filler}"
    qas = [{"id": "t", "question": "Where is the treasure?",
            "answers": [{"text": "under the old oak tree", "answer_start": context.index("under the old oak tree")}]}]
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_a_context_longer_than_a_window_gives_overlapping_windows_labelled_cls_outside(tmp_path, tokenizer):
    f = write(tmp_path / "long.json", long_context_doc())
    task = load_task(qa_spec(f, f, max_seq_length=64, task_options={"doc_stride": 16}))
    split = tokenize_task(task, tokenizer).train
    assert len(split) > 5 and set(split.meta["example"]) == {0}
    assert split.input_ids.shape[1] <= 64
    starts, ends = split.targets["start_positions"], split.targets["end_positions"]
    inside = np.nonzero(starts > 0)[0]
    assert 1 <= len(inside) < len(split) and (ends[starts == 0] == 0).all()  # CLS elsewhere
    context = split.meta["examples"][0]["context"]
    for w in inside:
        off = split.meta["offsets"][w]
        assert context[off[starts[w], 0]:off[ends[w], 1]] == "under the old oak tree"
    # Consecutive windows overlap by doc_stride context tokens.
    first = split.meta["offsets"][0][split.meta["offsets"][0][:, 0] >= 0]
    second = split.meta["offsets"][1][split.meta["offsets"][1][:, 0] >= 0]
    assert (first[-16:] == second[:16]).all()


def test_an_answer_cut_by_a_window_edge_is_labelled_cls(tmp_path, tokenizer):
    """Windows that hold only part of the answer must not label a partial span."""
    f = write(tmp_path / "long.json", long_context_doc())
    task = load_task(qa_spec(f, f, max_seq_length=32, task_options={"doc_stride": 4}))
    split = tokenize_task(task, tokenizer).train
    context = split.meta["examples"][0]["context"]
    for w in range(len(split)):
        s, e = split.targets["start_positions"][w], split.targets["end_positions"][w]
        if s:
            off = split.meta["offsets"][w]
            assert context[off[s, 0]:off[e, 1]] == "under the old oak tree"


def test_a_question_longer_than_the_window_allows_is_cut_to_fit(tmp_path, tokenizer):
    doc = squad_doc(("Paris",))
    doc["data"][0]["paragraphs"][0]["qas"][0]["question"] = "what " * 80 + "is the capital of France?"
    f = write(tmp_path / "q.json", doc)
    task = load_task(qa_spec(f, f, max_seq_length=48, task_options={"doc_stride": 8}))
    data = tokenize_task(task, tokenizer)
    assert data.train.meta["truncated_questions"] == 1 and data.train.input_ids.shape[1] <= 48


# ====================================================================================== post-processing


def test_best_spans_respects_context_length_and_order():
    neg = -10.0
    start = np.array([[9.0, 1.0, 5.0, neg, 2.0, neg]])   # token 0 is CLS: highest but off context
    end = np.array([[9.0, neg, neg, neg, 3.0, 8.0]])
    context = np.array([[False, True, True, True, True, True]])
    s, e, score = best_spans(start, end, context, n_best_size=20, max_answer_length=30)
    assert (s[0], e[0], score[0]) == (2, 5, 13.0)
    s, e, score = best_spans(start, end, context, n_best_size=20, max_answer_length=3)  # 2..5 is 4 tokens
    assert (s[0], e[0], score[0]) == (4, 5, 10.0)  # 2+8 beats (2, 4): 5+3
    s, e, score = best_spans(start, end, context, n_best_size=1, max_answer_length=30)  # only 2 and 5
    assert (s[0], e[0]) == (2, 5)
    s, e, score = best_spans(np.array([[0.0, 0.0, 5.0]]), np.array([[0.0, 5.0, 0.0]]),
                             np.array([[False, True, True]]), n_best_size=1, max_answer_length=30)
    assert score[0] == -np.inf  # the only start comes after the only end: no valid span


class _FixedQA(torch.nn.Module):
    """A stand-in head: window w's logits are -5 everywhere but ``value`` at its chosen start and
    end token (``rows[w] = (start, end, value)``, consumed in order, as evaluation batches come)."""

    def __init__(self, rows):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # evaluation reads the device from it
        self.rows = list(rows)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        from transformers.modeling_outputs import QuestionAnsweringModelOutput

        b, w = input_ids.shape
        rows, self.rows = self.rows[:b], self.rows[b:]
        s = torch.full((b, w), -5.0)
        e = torch.full((b, w), -5.0)
        for i, (si, ei, val) in enumerate(rows):
            s[i, si], e[i, ei] = val, val
        return QuestionAnsweringModelOutput(start_logits=s, end_logits=e)


def test_the_best_span_over_all_windows_is_the_answer(tmp_path, tokenizer):
    f = write(tmp_path / "long.json", long_context_doc())
    task = load_task(qa_spec(f, f, max_seq_length=64, task_options={"doc_stride": 16}))
    split = tokenize_task(task, tokenizer).eval
    starts, ends = split.targets["start_positions"], split.targets["end_positions"]
    gold = int(np.nonzero(starts > 0)[0][0])
    ctx = [int(np.nonzero(split.meta["offsets"][w][:, 0] >= 0)[0][0]) for w in range(len(split))]
    # Every window proposes its first context token with score 2; the gold window its answer with 3.
    rows = [(starts[w], ends[w], 3.0) if w == gold else (ctx[w], ctx[w], 2.0) for w in range(len(split))]
    qa = ExtractiveQATask(metrics=("f1", "exact_match"), options=ExtractiveQATask.check_options({"doc_stride": 16}))
    assert qa.predict_answers(_FixedQA(rows), split, batch_size=3) == ["under the old oak tree"]
    assert qa.evaluate(_FixedQA(rows), split, batch_size=3) == {"f1": 1.0, "exact_match": 1.0}
    # The gold window scoring lower than the others: the answer is another window's first word.
    rows = [(starts[w], ends[w], 1.0) if w == gold else (ctx[w], ctx[w], 2.0) for w in range(len(split))]
    assert qa.predict_answers(_FixedQA(rows), split, batch_size=3) != ["under the old oak tree"]


# ====================================================================================== floor, sample, card


def test_floor_is_the_best_fixed_position_span_chosen_on_train(tmp_path, tokenizer):
    f = write(tmp_path / "s.json", squad_doc())
    task = load_task(qa_spec(f, f))
    data = tokenize_task(task, tokenizer)
    # Words 9-10 of each context: "Neil Armstrong" (Moon, an answer), "the Seine" (Paris: "Seine"
    # once the article is dropped), "It was" (Rust), "Green tea" (Tea): EM 2 of the 8 questions;
    # no other (start, length) hits more than 2.
    assert data.task.floor("exact_match", data) == pytest.approx(2 / 8)
    from rayprune.tasks.extractive_qa import _fixed_span_grid

    grid = _fixed_span_grid(data.eval.meta["examples"], "exact_match")
    assert grid[9, 2] == 2 / 8 and grid[0, 1] == 1 / 8 and max(grid.values()) == 2 / 8
    assert 2 / 8 <= data.task.floor("f1", data) < 0.5
    assert data.task.eval_size(data.eval) == 8 and len(data.eval) == 8
    assert "fixed-position span" in data.task.floor_description()


def card_code(card: str) -> str:
    return card.split("```python\n", 1)[1].split("```", 1)[0]


def test_card_usage_loads_the_export_with_the_question_answering_auto_class():
    card = ExtractiveQATask(metrics=("f1",), options={"max_answer_length": 12}).card_usage("out/trial_1")
    code = card_code(card)
    assert "AutoModelForQuestionAnswering.from_pretrained('out/trial_1')" in code
    assert ".tril(11)" in code and "pipeline('question-answering', model='out/trial_1')" in code
    compile(code, "card", "exec")


def test_distillation_is_the_mean_of_start_and_end_soft_target_losses():
    from transformers.modeling_outputs import QuestionAnsweringModelOutput

    from rayprune.tasks.classification import logits_distillation_loss

    gen = torch.Generator().manual_seed(0)
    s, e, ts, te = (torch.randn(3, 7, generator=gen) for _ in range(4))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    batch = {"attention_mask": mask}
    task = ExtractiveQATask(metrics=("f1",))
    student = QuestionAnsweringModelOutput(start_logits=s, end_logits=e)
    teacher = QuestionAnsweringModelOutput(start_logits=ts, end_logits=te)
    loss = task.distillation_loss(student, teacher, batch, 2.0)
    same = task.distillation_loss(student, student, batch, 2.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6) and float(loss) > 0
    # Rows without padding: exactly the mean of the two KLs.
    full = {"attention_mask": torch.ones(3, 7, dtype=torch.long)}
    expected = (logits_distillation_loss(s, ts, 2.0) + logits_distillation_loss(e, te, 2.0)) / 2
    assert float(task.distillation_loss(student, teacher, full, 2.0)) == pytest.approx(float(expected))
    # Padding does not count: changing padded logits changes nothing.
    s2 = s.clone()
    s2[1, 5:] = 100.0
    assert float(task.distillation_loss(QuestionAnsweringModelOutput(start_logits=s2, end_logits=e),
                                        teacher, batch, 2.0)) == pytest.approx(float(loss))


# ====================================================================================== end to end


def test_training_end_to_end_then_the_export_answers_through_the_card(tmp_path, tiny_dir):
    from transformers import pipeline

    from rayprune.models import load_model_and_tokenizer
    from rayprune.training import TrialConfig, TrialSettings, run_training

    f = write(tmp_path / "s.json", squad_doc(copies=2))
    task = load_task(qa_spec(f, f, max_seq_length=48, task_options={"doc_stride": 16}, selection_fraction=0.2))
    _, tok = load_model_and_tokenizer(tiny_dir, task=task.task)
    data = tokenize_task(task, tok)
    settings = TrialSettings(model=tiny_dir, metric="f1", steps=4, batch_size=4, eval_interval=2, threads=1,
                             teacher_dir=tiny_dir)
    config = TrialConfig.from_flat({"method": "magnitude", "target_sparsity": 0.5, "distill.alpha": 0.5}, settings)
    reports = []
    model, method, metrics = run_training(config, settings, data, report=lambda m, w: reports.append(m))
    assert len(reports) == 2 and math.isfinite(metrics["f1"]) and math.isfinite(metrics["exact_match"])
    assert 0.0 <= metrics["f1"] <= 1.0 and metrics["sparsity"] == pytest.approx(0.5, abs=0.05)
    scores = data.task.evaluate(model, data.eval, 8)
    assert set(scores) == {"f1", "exact_match"} and all(math.isfinite(v) for v in scores.values())
    sample = data.task.predictions_sample(model, data.eval, limit=3)
    assert [set(r) for r in sample] == [{"question", "gold", "predicted"}] * 3
    assert sample[0]["question"] == data.eval.meta["examples"][0]["question"]

    out = tmp_path / "export"
    method.finalize().save_pretrained(out)
    tok.save_pretrained(out)
    # transformers 5 has no pipeline("question-answering"): the card's snippet is the way in.
    with pytest.raises(KeyError, match="question-answering has been removed"):
        pipeline("question-answering", model=str(out))
    scope: dict = {}
    exec(card_code(data.task.card_usage(str(out))), scope)
    context = "The book was written by Ada in 1843."
    assert isinstance(scope["answer"], str) and scope["answer"] and scope["answer"] in context


# ====================================================================================== real dev file


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=NO_SQUAD_REASON)
def test_real_dev_file_carves_by_article_and_keeps_every_question():
    spec = DataSpec(task="squad", train_files=[str(SQUAD_DEV)], eval_fraction=0.2, group_field="title",
                    selection_fraction=0.0, max_seq_length=192, task_options={"doc_stride": 64})
    task = load_task(spec)
    assert len(task.train) + len(task.eval) == 10_570
    assert not {ex["title"] for ex in task.train} & {ex["title"] for ex in task.eval}
    assert task.notes[0].startswith("eval carved from train_files: 10 of 48 groups by 'title'")
    assert task.name == "squad" and all(ex["answers"]["text"] for ex in task.eval)


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=NO_SQUAD_REASON)
def test_real_dev_windows_label_the_gold_text(tokenizer):
    spec = DataSpec(task="squad", train_files=[str(SQUAD_DEV)], eval_fraction=0.2, group_field="title",
                    max_train_samples=300, max_eval_samples=50, max_seq_length=128,
                    task_options={"doc_stride": 32})
    data = tokenize_task(load_task(spec), tokenizer)
    split = data.train
    labelled = np.nonzero(split.targets["start_positions"] > 0)[0]
    assert len(labelled) >= len(split.meta["examples"]) * 0.9  # almost every question has a window with its answer
    for w in labelled:
        ex = split.meta["examples"][split.meta["example"][w]]
        off = split.meta["offsets"][w]
        text = ex["context"][off[split.targets["start_positions"][w], 0]:off[split.targets["end_positions"][w], 1]]
        assert text == ex["answers"][0]
    assert data.task.eval_size(data.eval) == 50 and len(data.eval) >= 50
    assert 0.0 < data.task.floor("f1", data) < 0.2


def test_exact_match_is_accepted_as_the_objective_metric_of_a_space_file():
    """objective.metric is checked against every task's metrics when the YAML is read (the
    preflight then checks it against the loaded task's)."""
    from rayprune.config.sections import ObjectiveSection

    assert ObjectiveSection(metric="exact_match").metric == "exact_match"
    with pytest.raises(ValueError, match=r"unknown metric 'em'; allowed: \[.*'exact_match'"):
        ObjectiveSection(metric="em")
