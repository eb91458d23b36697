"""Source hub: a GLUE preset or a named dataset through datasets.load_dataset (a fake stands in
for the network)."""

import os

import pytest

from rayprune.data import DataSpec, load_task


def test_hub_glue_preset_uses_hub_names(monkeypatch):
    """Without a data dir a GLUE preset goes to the hub; a fake `load_dataset` stands in."""
    import datasets

    calls = []
    features = datasets.Features(
        {"sentence": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["negative", "positive"]),
         "idx": datasets.Value("int32")}
    )

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        split = lambda n: datasets.Dataset.from_dict(  # noqa: E731
            {"sentence": [f"s{i}" for i in range(n)], "label": [i % 2 for i in range(n)],
             "idx": list(range(n))}, features=features)
        return datasets.DatasetDict({"train": split(20), "validation": split(6), "test": split(3)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_task(DataSpec(task="sst2", selection_fraction=0.25))
    assert calls == [("nyu-mll/glue", "sst2")]
    assert task.label_names == ("negative", "positive")
    assert len(task.train) == 15 and len(task.selection) == 5 and len(task.eval) == 6
    assert task.eval[0] == {"sentence": "s0", "label": 0}
    with pytest.raises(ValueError, match=r"no split 'dev'.*\['train', 'validation', 'test'\]"):
        load_task(DataSpec(task="sst2", eval_split="dev"))


def test_hub_failure_says_to_pass_local_data(monkeypatch):
    import datasets

    def offline(name, config=None, **kwargs):
        raise ConnectionError(f"Couldn't reach {name!r} on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"could not load dataset 'nyu-mll/glue' \(config 'rte'\) "
                                         r"from the Hugging Face hub \(offline\?\).*--data-dir"):
        load_task(DataSpec(task="rte"))


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1",
                    reason="needs HF_HUB_OFFLINE=1 so the real hub call fails at once")
def test_real_hub_call_offline_fails_clearly():
    with pytest.raises(ValueError, match="could not load dataset 'imdb'.*pass --data-dir"):
        load_task(DataSpec(dataset="imdb", text_fields=["text"]))
