"""Every registered method on every registered task, through the real trial loop, on tiny
config-built BERTs: the trial reaches its sparsity (the loop itself fails a trial that ends more
than 0.05 below its target), reports finite task metrics, and the model the method finalises
(masks baked; GRAIN / head_ffn physically smaller) saves and reloads through the task's Auto class
to the same predictions, so what `rayprune export` writes works for every head."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rayprune.data import DataSpec, load_task, tokenize_task
from rayprune.methods import available_methods, get_method
from rayprune.models import load_model_and_tokenizer
from rayprune.tasks import available_tasks
from rayprune.training import TrialConfig, TrialSettings, run_training

TASKS = available_tasks()
METHODS = available_methods()
STEPS = 6

_CONTEXTS = [
    ("Paris", "Paris is the capital of France. It lies on the Seine river.",
     [("What is the capital of France?", "Paris"), ("Which river runs through it?", "Seine")]),
    ("Moon", "Neil Armstrong walked on the Moon in 1969. It orbits the Earth.",
     [("Who walked on the Moon?", "Neil Armstrong"), ("When did he walk there?", "1969")]),
    ("Tea", "Green tea comes from China and black tea from India.",
     [("Where does green tea come from?", "China"), ("Where does black tea come from?", "India")]),
]
_SENTENCES = [
    [("Alice", "B-PER"), ("works", "O"), ("at", "O"), ("Google", "B-ORG"), ("in", "O"), ("Paris", "B-LOC")],
    [("Bob", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("New", "B-LOC"), ("York", "I-LOC")],
    [("The", "O"), ("United", "B-ORG"), ("Nations", "I-ORG"), ("met", "O"), ("Carol", "B-PER")],
]


def _squad_file(path: Path) -> str:
    data = [{"title": title, "paragraphs": [{"context": context, "qas": [
        {"id": f"{title}-{i}-{c}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
        for c in range(3) for i, (q, a) in enumerate(qas)]}]} for title, context, qas in _CONTEXTS]
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return str(path)


def _conll_file(path: Path, copies: int) -> str:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in _SENTENCES * copies) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    """A tiny config-built BERT encoder (no head: every task adds its own, as from a hub encoder)
    with the bundled MiniLM tokenizer; 32 hidden units, 4 heads of 8, FFN 64, 2 layers."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rayprune.models import resolve_model_path

    directory = tmp_path_factory.mktemp("encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
              ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def task_data(encoder_dir, tmp_path_factory):
    """task kind -> its tiny tokenized data, built once."""
    folder = tmp_path_factory.mktemp("data")
    specs = {
        "classification": DataSpec(task="demo", max_train_samples=48, max_eval_samples=16, max_seq_length=32,
                                   selection_fraction=0.0),
        "extractive_qa": DataSpec(task="squad", train_files=[_squad_file(folder / "qa.json")], eval_fraction=0.34,
                                  group_field="title", max_seq_length=48, task_options={"doc_stride": 16},
                                  selection_fraction=0.0),
        "token_classification": DataSpec(task_type="token_classification",
                                         train_files=[_conll_file(folder / "train.conll", 8)],
                                         eval_files=[_conll_file(folder / "dev.conll", 2)], max_seq_length=32,
                                         selection_fraction=0.0),
    }
    assert sorted(specs) == TASKS, "a new task needs its tiny data here"
    built = {}
    for kind, spec in specs.items():
        task = load_task(spec)
        _, tokenizer = load_model_and_tokenizer(encoder_dir, task=task.task)
        built[kind] = tokenize_task(task, tokenizer)
    return built


def _flat_config(method: str) -> dict:
    cls = get_method(method)
    config = {"method": method, "target_sparsity": 0.5, "learning_rate": 1e-3}
    if not getattr(cls, "one_shot", False):
        config.update({"schedule.start": 0.0, "schedule.end": 0.5, "schedule.interval": 1})
    else:
        config[f"{method}.calibration_samples"] = 8
    return config


def _predictions(task, model, split):
    """What the task reads back from a model: class / tag logits or QA start and end logits."""
    model.eval()
    batch = next(iter(split.batches(8, shuffle=False)))
    with torch.no_grad():
        outputs = model(**task.model_inputs(batch))
    return [o for o in (getattr(outputs, k, None) for k in ("logits", "start_logits", "end_logits")) if o is not None]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", TASKS)
def test_every_method_prunes_every_task_and_its_export_reloads(kind, method, task_data, encoder_dir, tmp_path):
    data = task_data[kind]
    task = data.task
    settings = TrialSettings(model=encoder_dir, metric=task.primary_metric, steps=STEPS, batch_size=4,
                             eval_interval=3, threads=1, teacher_dir=encoder_dir)
    config = TrialConfig.from_flat(_flat_config(method), settings)
    reports = []
    model, pruner, final = run_training(config, settings, data, report=lambda m, w: reports.append(m))
    assert [r["step"] for r in reports] == [3, 6]
    for name in task.metrics:
        assert math.isfinite(final[name]) and 0.0 <= final[name] <= 1.0, (name, final[name])
    structured = pruner.structured
    reached = final["sparsity_encoder"] if structured else final["sparsity"]
    assert reached >= 0.5 - 0.05 - (0.0 if structured else 1e-6), reached

    masked = _predictions(task, model, data.eval)
    exported = pruner.finalize()
    if structured:  # physically smaller, same outputs
        assert type(exported).__name__.startswith("PrunedBert")
        assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in model.parameters())
    exported.save_pretrained(tmp_path)
    from rayprune.models import register_pruned_models

    register_pruned_models()
    again = task.model_class().from_pretrained(tmp_path)
    for before, after in zip(masked, _predictions(task, again, data.eval)):
        assert torch.allclose(before, after, atol=1e-4)
