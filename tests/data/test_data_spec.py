"""DataSpec validation: every field checked in the constructor, naming the field."""

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rayprune.data import DataSpec, load_task


def test_unknown_task_lists_allowed_names():
    with pytest.raises(ValueError, match=r"unknown task 'sst3'.*'cola'.*'sst2'.*'demo'"):
        DataSpec(task="sst3")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "no data source"),
        ({"dataset": "imdb"}, "text_fields is required"),
        ({"task": "sst2", "selection_fraction": 1.0}, r"selection_fraction must be in \[0, 1\)"),
        ({"task": "sst2", "max_train_samples": 0}, "max_train_samples must be >= 1"),
        ({"task": "sst2", "text_fields": ["a"]}, "set by the GLUE preset"),
        ({"task": "sst2", "num_labels": 3}, "contradicts the GLUE preset"),
        ({"task": "sst2", "metrics": ["bleu"]}, "metrics must be a non-empty list"),
        ({"task": "sst2", "dataset": "imdb"}, "pick one source"),
        ({"train_files": ["a.csv"], "text_fields": ["t"]}, "eval_files go together"),
        ({"train_files": ["a.xlsx"], "eval_files": ["b.csv"], "text_fields": ["t"]},
         "unsupported file type"),
        ({"dataset": "imdb", "text_fields": ["a", "b", "c"]}, "1 or 2 text columns"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataSpec(**kwargs)


# --------------------------------------------------------------------------------------------
# Every field on its own: type and bounds, the field named in the message
# --------------------------------------------------------------------------------------------

INT_FIELDS = ["num_labels", "max_train_samples", "max_eval_samples", "max_seq_length", "seed"]
NOT_INTEGERS = [3.0, 2.5, float("nan"), float("inf"), -float("inf"), True, "12", [3], {"a": 1}]


@pytest.mark.parametrize("name", INT_FIELDS)
@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_integer_fields_reject_everything_but_ints(name, value):
    with pytest.raises(TypeError, match=rf"{name} must be an int.*got {name}="):
        DataSpec(task="sst2" if name != "num_labels" else "demo", **{name: value})


@pytest.mark.parametrize(
    "name,bad,good",
    [
        ("max_seq_length", [7, 0, -1, 8193, 100000, 10**400], [8, 128, 8192]),
        ("max_train_samples", [0, -3], [1, 10**400]),
        ("max_eval_samples", [0], [1, 5000]),
        ("seed", [-1, 2**63], [0, 2**63 - 1]),
    ],
)
def test_integer_bounds(name, bad, good):
    for value in bad:
        with pytest.raises(ValueError, match=rf"{name} must be .*got {name}="):
            DataSpec(task="sst2", **{name: value})
    for value in good:
        assert getattr(DataSpec(task="sst2", **{name: value}), name) == value


def test_max_seq_length_defaults_to_128():
    assert DataSpec(task="sst2").max_seq_length == 128


def test_num_labels_bounds():
    with pytest.raises(ValueError, match=r"num_labels must be in \[1, 100000\]"):
        DataSpec(dataset="imdb", text_fields=["text"], num_labels=0)
    with pytest.raises(ValueError, match="num_labels must be"):
        DataSpec(dataset="imdb", text_fields=["text"], num_labels=10**400)
    assert DataSpec(dataset="imdb", text_fields=["text"], num_labels=1).num_labels == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, 1.0, 2])
def test_selection_fraction_out_of_range(value):
    with pytest.raises(ValueError, match=r"selection_fraction must be in \[0, 1\)"):
        DataSpec(task="sst2", selection_fraction=value)


def test_selection_fraction_huge_int_is_a_value_error():  # found by the fuzz: OverflowError
    with pytest.raises(ValueError, match=r"selection_fraction must be in \[0, 1\)"):
        DataSpec(task="sst2", selection_fraction=10**400)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        # found by the fuzz: passed the spec, then failed in load_task
        ({"task": "demo", "metrics": ["pearson"]}, r"\['pearson'\] do not apply to classification"),
        ({"task": "stsb", "metrics": ["accuracy"]}, r"\['accuracy'\] do not apply to regression"),
        ({"task": "mnli", "metrics": ["accuracy", "f1"]}, "'f1' is binary .* num_labels=3"),
        ({"dataset": "imdb", "text_fields": ["t"], "num_labels": 1, "metrics": "f1"},
         "do not apply to regression"),
    ],
)
def test_metrics_that_cannot_fit_the_known_labels(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataSpec(**kwargs)
    # Where the label type is only known from the data, the loader checks (test_data_files).
    assert DataSpec(dataset="imdb", text_fields=["t"], metrics=["pearson"]).metrics == ["pearson"]


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1]])
def test_selection_fraction_must_be_a_number(value):
    with pytest.raises(TypeError, match="selection_fraction must be a number"):
        DataSpec(task="sst2", selection_fraction=value)


@pytest.mark.parametrize(
    "name", ["task", "dataset", "dataset_config", "label_field", "train_split", "eval_split",
             "source"]
)
@pytest.mark.parametrize("value", [5, 1.5, True, ["sst2"], {"a": 1}])
def test_string_fields_reject_other_types(name, value):
    with pytest.raises(TypeError, match=rf"{name} must be a string, got {name}="):
        DataSpec(**{"dataset": "imdb", "text_fields": ["text"], name: value})


@pytest.mark.parametrize("name", ["task", "dataset", "label_field", "train_split", "source"])
def test_string_fields_reject_empty_strings(name):
    with pytest.raises(ValueError, match=rf"{name} must be a non-empty string"):
        DataSpec(**{"dataset": "imdb", "text_fields": ["text"], name: "  "})


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"text_fields": 5}, TypeError, "text_fields must be a list of strings"),
        ({"text_fields": {"a": 1}}, TypeError, "text_fields must be a list of strings"),
        ({"text_fields": ["a", 3]}, TypeError, "text_fields must be a list of strings"),
        ({"text_fields": [""]}, ValueError, "text_fields must name 1 or 2"),
        ({"text_fields": ["text"], "metrics": [["accuracy"]]}, TypeError,
         "metrics must be a list of strings"),
        ({"text_fields": ["text"], "metrics": []}, ValueError, "metrics must be a non-empty"),
        ({"text_fields": ["label"]}, ValueError, "label_field='label' is also in text_fields"),
        ({"text_fields": ["text"], "eval_split": "train"}, ValueError,
         "eval_split must differ from train_split"),
    ],
)
def test_lists_and_cross_field_mistakes(kwargs, error, message):
    with pytest.raises(error, match=message):
        DataSpec(dataset="imdb", **kwargs)


def test_file_lists():
    with pytest.raises(TypeError, match="train_files must be a list of file paths"):
        DataSpec(train_files=[3], eval_files=["b.csv"], text_fields=["t"])
    with pytest.raises(ValueError, match="train_files must name at least one file"):
        DataSpec(train_files=[], eval_files=["b.csv"], text_fields=["t"])
    with pytest.raises(ValueError, match="eval_files: a file path contains a NUL byte"):
        DataSpec(train_files=["a.csv"], eval_files=["b\0.csv"], text_fields=["t"])
    spec = DataSpec(train_files="a.CSV", eval_files=("b.jsonl",), text_fields="t")
    assert spec.train_files == ["a.CSV"] and spec.eval_files == ["b.jsonl"]
    assert spec.text_fields == ["t"]


def test_demo_sizes_are_bounded():
    with pytest.raises(ValueError, match=r"max_train_samples of task='demo'.*\[2, 100000\]"):
        DataSpec(task="demo", max_train_samples=1)
    with pytest.raises(ValueError, match=r"max_eval_samples of task='demo'.*got max_eval_samples="):
        DataSpec(task="demo", max_eval_samples=10**9)
    assert DataSpec(task="demo", max_train_samples=100_000).max_train_samples == 100_000
    with pytest.raises(ValueError, match="task='demo' has 2 labels, got num_labels=3"):
        DataSpec(task="demo", num_labels=3)


def test_unknown_source_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown source 'csvs'; available: \['demo', 'files', "
                                         r"'glue_dir', 'hub'"):
        DataSpec(task="sst2", source="csvs")


def test_task_spellings_are_normalised():
    assert DataSpec(task=" SST-2 ").task == "sst2"
    assert DataSpec(task="STS_B").task == "stsb"


# --------------------------------------------------------------------------------------------
# Fuzz: any field values either build a spec that loads, or raise one clean error naming a field
# --------------------------------------------------------------------------------------------

FIELDS = [f.name for f in dataclasses.fields(DataSpec)]
# Values a user could plausibly write for each field, right and wrong.
PLAUSIBLE = {
    "task": ["demo", "sst2", "SST-2", "rte", "stsb", "sst3", ""],
    "dataset": ["imdb", ""],
    "dataset_config": ["plain_text"],
    "train_files": [["a.csv"], "a.jsonl", ["a.xlsx"], [], ["a.csv", "b.tsv"]],
    "eval_files": [["b.csv"], "b.parquet", [None]],
    "text_fields": [["sentence"], ["s1", "s2"], "text", ["a", "b", "c"], [], ["label"]],
    "label_field": ["label", "y", ""],
    "num_labels": [1, 2, 3, 0],
    "metrics": [["accuracy"], "f1", ["pearson"], ["bleu"], []],
    "train_split": ["train", "validation"],
    "eval_split": ["validation", "train", "test"],
    "max_train_samples": [2, 40, 300, 0, 1],
    "max_eval_samples": [2, 20, 0],
    "max_seq_length": [8, 32, 128, 8192, 7, 8193],
    "selection_fraction": [0.0, 0.1, 0.5, 0.999, 1.0, -0.1],
    "seed": [0, 1, 7, -1],
    "source": ["demo", "hub", "files", "glue_dir", "nope"],
    "task_type": ["classification", "nope", "squad", ""],
    "task_options": [{}, {"x": 1}, None, "doc_stride"],
    "eval_fraction": [0.2, 0.5, 0.0, 1.0, "0.2", -0.5],
    "group_field": ["title", "label", ""],
}
WEIRD = [None, True, False, 0, -1, 10**400, 2**63, 1.5, 3.0, float("nan"), float("inf"),
         -float("inf"), "", " ", "\u00e9\u6f22\U0001f600", "\udcff", "x" * 10_000, [], [1, 2],
         [None], [[1]], {}, {"a": 1}, {1: [2]}, (1,), b"bytes", object()]


# Valid starting points, one per kind of source; the fuzz mutates a few fields of one.
BASES = [
    {"task": "demo", "max_train_samples": 40, "max_eval_samples": 20},
    {"task": "sst2", "max_train_samples": 100},
    {"dataset": "imdb", "text_fields": ["text"]},
    {"train_files": ["a.csv"], "eval_files": ["b.csv"], "text_fields": ["sentence"]},
]


def _random_kwargs(rng: random.Random) -> dict:
    kwargs = dict(rng.choice(BASES))
    for name in rng.sample(FIELDS, rng.randint(0, 4)):
        pool = PLAUSIBLE[name] if rng.random() < 0.7 else WEIRD
        kwargs[name] = rng.choice(pool)
    return kwargs


def test_fuzz_every_spec_is_valid_or_one_clean_error():
    """A fixed seed and a bounded count for CI; RAYPRUNE_FUZZ_EXAMPLES=100000 runs longer."""
    rng = random.Random(0)
    n = int(os.environ.get("RAYPRUNE_FUZZ_EXAMPLES", "3000"))
    built = loaded = 0
    for _ in range(n):
        kwargs = _random_kwargs(rng)
        try:
            spec = DataSpec(**kwargs)
        except (TypeError, ValueError) as err:
            message = str(err)
            assert "\n" not in message, (kwargs, message)
            assert any(name in message for name in FIELDS), (kwargs, message)
            continue
        built += 1
        # What passes is what the loader and the tokenizer accept.
        for name in ("num_labels", "max_train_samples", "max_eval_samples"):
            value = getattr(spec, name)
            assert value is None or (type(value) is int and value >= 1), (kwargs, name)
        assert type(spec.max_seq_length) is int and 8 <= spec.max_seq_length <= 8192
        assert type(spec.seed) is int and 0 <= spec.seed < 2**63
        assert 0.0 <= spec.selection_fraction < 1.0
        for name in ("text_fields", "metrics"):
            value = getattr(spec, name)
            assert value is None or all(type(v) is str and v for v in value), (kwargs, name)
        if spec.task == "demo" and spec.source in (None, "demo"):
            task = load_task(spec)  # the demo is the one source a fuzz can load offline
            assert task.max_seq_length == spec.max_seq_length
            assert len(task.train) + len(task.selection) == (spec.max_train_samples or 2000)
            loaded += 1
    # The generator must reach valid specs, not only errors.
    assert built > n // 10 and loaded > 10, (built, loaded)
    print(f"fuzz: {n} specs, {built} valid, {loaded} demo tasks loaded")


def test_spec_and_data_package_import_neither_torch_nor_datasets():
    """``--dry-run`` on a malformed YAML builds a DataSpec; that must not load torch."""
    code = (
        "import sys\n"
        "from rayprune.data.spec import DataSpec\n"
        "try:\n"
        "    DataSpec(task='sst2', max_seq_length=float('nan'))\n"
        "except TypeError:\n"
        "    pass\n"
        "import rayprune.data\n"
        "rayprune.data.DataSpec(task='demo', source='demo')\n"
        "heavy = [m for m in ('torch', 'datasets', 'transformers', 'pandas', 'pyarrow', 'ray')\n"
        "         if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
