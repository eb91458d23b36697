"""The preflight turns what would fail in every trial, or as a library traceback, into one
``error:`` line naming the file, the key and the fix: a truncated or corrupt weight file, a
classifier head whose size the data's labels contradict, a ``data.max_seq_length`` longer than
the model's position embeddings (issue 26 §2.2-2.4)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from helpers import save_tiny_bert
from rayprune.cli import main


def write_space(directory: Path, model: str, *, data: dict | None = None) -> Path:
    space = {"name": "pre", "model": model, "data": data or {"task": "demo", "max_train_samples": 32,
                                                           "max_eval_samples": 16},
             "training": {"steps": 2}, "space": {"method": "magnitude", "target_sparsity": 0.5}}
    path = directory / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def dry_run(space: Path, capsys) -> tuple[int, str]:
    """(exit code, the one ``error:`` line or ""); fails on a traceback or a second error line
    (progress bars of the data and model libraries aside)."""
    capsys.readouterr()  # what building the fixtures printed
    code = main(["search", "--space", str(space), "--output", str(space.parent / "runs"), "--dry-run"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, errors
    return code, (errors[0] if errors else "")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_broken_safetensors_file_is_one_error_naming_it(tmp_path, capsys, damage):
    model = save_tiny_bert(tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000] if damage == "truncated" else b"not a weight file" * 8)
    code, err = dry_run(write_space(tmp_path, str(model)), capsys)
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'space.yaml'}: model: {weights} ")
    assert "truncated or corrupt" in err


def test_a_broken_reference_model_is_named_before_anything_loads(tiny_dir, tmp_path, capsys):
    given = save_tiny_bert(tmp_path / "given")
    (given / "model.safetensors").write_bytes(b"\x00" * 7)
    space = write_space(tmp_path, tiny_dir)
    raw = yaml.safe_load(space.read_text())
    raw["reference"] = {"model": str(given)}
    space.write_text(yaml.safe_dump(raw))
    code, err = dry_run(space, capsys)
    assert code == 2
    assert f"reference.model: {given / 'model.safetensors'} is not a complete safetensors file" in err


def test_a_head_the_labels_contradict_is_one_error_with_both_sizes(tiny_dir, tmp_path, capsys):
    for split, n in (("train", 30), ("eval", 12)):
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows([f"sentence number {i}", (0, 1, 5)[i % 3]] for i in range(n))
    data = {"train_files": str(tmp_path / "train.csv"), "eval_files": str(tmp_path / "eval.csv"),
            "text_fields": ["sentence"]}
    code, err = dry_run(write_space(tmp_path, tiny_dir, data=data), capsys)
    assert code == 2
    assert f"model: {tiny_dir} has a classification head of 2 labels" in err
    assert "the data's labels imply 6 classes (labels [0, 1, 5]" in err


def test_max_seq_length_beyond_the_position_embeddings_is_refused(tiny_dir, tmp_path, capsys):
    data = {"task": "demo", "max_train_samples": 32, "max_eval_samples": 16, "max_seq_length": 512}
    code, err = dry_run(write_space(tmp_path, tiny_dir, data=data), capsys)
    assert code == 2
    assert (f"data.max_seq_length: 512, but the model {tiny_dir} has 128 position embeddings" in err
            and "allowed: 8..128" in err)
    data["max_seq_length"] = 128  # the whole table is usable
    assert dry_run(write_space(tmp_path, tiny_dir, data=data), capsys)[0] == 0


def test_position_limit_leaves_out_roberta_padding_rows():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from rayprune.search.preflight import position_limit

    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=66, pad_token_id=1))
    assert position_limit(model) == 64  # positions start after padding_idx 1, as in roberta-base's 514 -> 512
