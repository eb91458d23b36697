"""The source registry: which source a spec gets, explicit choices, and user-registered sources.

Runs without ../shared: the user source reads jsonl files written here, the hub is faked.
"""

import json

import pytest

import rayprune.data.sources as sources
from data_files import numbered_csv
from rayprune.data import (
    DATA_DIR_ENV,
    DataSpec,
    TaskData,
    available_sources,
    choose_source,
    finalize_task,
    get_source,
    load_task,
    register_source,
    tokenize_task,
)
from rayprune.data.labels import records_to_columns


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so sources registered by a test do not leak."""
    monkeypatch.setattr(sources, "_REGISTERED", dict(sources._REGISTERED))
    return sources


@pytest.fixture
def jsonl_source(registry):
    """A user source as a project would write it: ``<data_dir>/train.jsonl`` + ``eval.jsonl``,
    one JSON object per line, finished by ``finalize_task``."""

    @register_source("jsonl_dir")
    def load_jsonl_dir(spec: DataSpec, data_dir: str | None) -> TaskData:
        if data_dir is None:
            raise ValueError("source 'jsonl_dir' needs data_dir")
        fields = [*spec.text_fields, spec.label_field]

        def read(name: str) -> dict[str, list]:
            with open(f"{data_dir}/{name}.jsonl", encoding="utf-8") as fh:
                return records_to_columns([json.loads(line) for line in fh], fields)

        return finalize_task(spec, "reviews", read("train"), read("eval"),
                             source=f"jsonl_dir:{data_dir}")

    return load_jsonl_dir


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_builtin_sources_are_registered():
    assert available_sources() == ["demo", "files", "glue_dir", "hub"]
    assert get_source("files").__module__ == "rayprune.data.sources.files"
    with pytest.raises(ValueError, match=r"unknown source 'csv'; available: \['demo', 'files'"):
        get_source("csv")


def test_choose_source_rule(tmp_path, monkeypatch):
    path = numbered_csv(tmp_path, 4)
    files = DataSpec(train_files=[path], eval_files=[path], text_fields=["sentence"])
    assert choose_source(DataSpec(task="demo")) == "demo"
    assert choose_source(files) == "files"
    assert choose_source(DataSpec(task="rte", train_files=[path], eval_files=[path]),
                         str(tmp_path)) == "files"
    assert choose_source(DataSpec(task="sst2")) == "hub"
    assert choose_source(DataSpec(dataset="imdb", text_fields=["text"]), str(tmp_path)) == "hub"
    assert choose_source(DataSpec(task="sst2"), str(tmp_path)) == "glue_dir"
    assert choose_source(DataSpec(task="sst2"), "") == "hub"  # explicitly no folder
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert choose_source(DataSpec(task="sst2")) == "glue_dir"
    # An explicit source wins over the rule.
    assert choose_source(DataSpec(task="sst2", source="hub")) == "hub"


def test_user_registered_source_loads_through_the_registry(jsonl_source, tmp_path, tokenizer):
    sentiments = ["neg", "pos"]
    _write_jsonl(tmp_path / "train.jsonl",
                 [{"text": f"review {i}", "stars": sentiments[i % 2]} for i in range(40)])
    _write_jsonl(tmp_path / "eval.jsonl",
                 [{"text": f"held out {i}", "stars": sentiments[i % 2]} for i in range(10)])
    assert "jsonl_dir" in available_sources() and get_source("jsonl_dir") is jsonl_source
    spec = DataSpec(source="jsonl_dir", text_fields=["text"], label_field="stars",
                    max_train_samples=20, selection_fraction=0.25, max_seq_length=8, seed=1)
    assert choose_source(spec) == "jsonl_dir"

    task = load_task(spec, data_dir=str(tmp_path))
    assert task.name == "reviews" and task.source == f"jsonl_dir:{tmp_path}"
    # The shared last step: string labels -> sorted ids, seeded subsample, selection split.
    assert task.label_names == ("neg", "pos") and task.num_labels == 2
    assert len(task.train) == 15 and len(task.selection) == 5 and len(task.eval) == 10
    assert {ex["stars"] for ex in task.train + task.eval} == {0, 1}
    assert task.eval[0] == {"text": "held out 0", "stars": 0}
    assert task.metrics == ("accuracy",)

    # The same subsample as any built-in source would draw from these rows.
    rows = [[f"review {i}", sentiments[i % 2]] for i in range(40)]
    csv = tmp_path / "train.csv"
    csv.write_text("text,stars\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    same = load_task(DataSpec(train_files=[str(csv)], eval_files=[str(csv)], text_fields=["text"],
                              label_field="stars", max_train_samples=20, selection_fraction=0.25,
                              seed=1))
    assert same.train == task.train and same.selection == task.selection

    data = tokenize_task(task, tokenizer)  # max_seq_length comes from the spec
    assert data.max_seq_length == 8 and data.train.input_ids.shape[1] <= 8


def test_in_memory_source_and_unknown_names(registry):
    @register_source("memory")
    def memory(spec, data_dir):
        cols = {"sentence": ["a b", "c d", "e f", "g h"], "label": [0, 1, 1, 0]}
        return finalize_task(spec, "memory", cols, cols, source="memory")

    task = load_task(DataSpec(source="memory", text_fields=["sentence"], selection_fraction=0.0))
    assert [ex["label"] for ex in task.train] == [0, 1, 1, 0] and task.source == "memory"
    with pytest.raises(ValueError, match=r"unknown source 'memroy'; available: .*'memory'"):
        DataSpec(source="memroy", text_fields=["sentence"])


def test_a_source_must_return_task_data(registry):
    register_source("broken")(lambda spec, data_dir: {"train": []})
    with pytest.raises(TypeError, match="source 'broken' returned dict, not a TaskData"):
        load_task(DataSpec(source="broken", text_fields=["t"]))
    with pytest.raises(TypeError, match=r"@register_source\('x'\) needs a function"):
        register_source("x")(42)
    with pytest.raises(ValueError, match="a source name must be a non-empty string"):
        register_source("")


def test_explicit_builtin_sources_check_what_they_need(tmp_path):
    with pytest.raises(ValueError, match="source 'demo' needs task='demo'"):
        load_task(DataSpec(task="sst2", source="demo"))
    with pytest.raises(ValueError, match="source 'glue_dir' needs a data directory"):
        load_task(DataSpec(task="sst2", source="glue_dir"))
    with pytest.raises(ValueError, match="source 'glue_dir' needs a GLUE task"):
        load_task(DataSpec(dataset="imdb", text_fields=["t"], source="glue_dir"),
                  data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="source 'files' needs train_files"):
        load_task(DataSpec(task="sst2", source="files"))
    with pytest.raises(ValueError, match="source 'hub' needs a GLUE task or a dataset"):
        load_task(DataSpec(source="hub", text_fields=["t"]))


def test_explicit_hub_source_ignores_the_data_dir(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        split = datasets.Dataset.from_dict({"sentence": ["x", "y", "z"], "label": [0, 1, 0]})
        return datasets.DatasetDict({"train": split, "validation": split})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    task = load_task(DataSpec(task="sst2", source="hub", selection_fraction=0.0))
    assert calls == [("nyu-mll/glue", "sst2")] and task.source.startswith("hub:nyu-mll/glue/sst2")
