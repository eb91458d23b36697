"""Sparse exports (issue 27, part 3): zeros stored as a bitmask, loaded back to the same logits.

The models are pruned by hand: the encoder linears' smallest weights zeroed (50 / 90 / 97%) or
2 of every 4 consecutive inputs of each row (2:4 along the input dimension)."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

import rayprune.export
from rayprune.compression import (SPARSE_WEIGHTS_NAME, compress_state_dict, decompress_state_dict, load_sparse,
                                  pack_bitmask, save_model, unpack_bitmask)
from rayprune.errors import SpecError

#: Small vocabulary: the encoder linears (4 * 64^2 + 2 * 64 * 128 per layer) dominate the file.
CONFIG = dict(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=16, num_labels=3)


def encoder_linears(model) -> list[torch.nn.Linear]:
    return [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}."]


@torch.no_grad()
def prune(model, pattern):
    """Zero the encoder linears' smallest weights: a fraction per tensor, or ``"2:4"``: the two
    smallest of every four consecutive inputs of each row."""
    for linear in encoder_linears(model):
        weight = linear.weight  # (out, in)
        if pattern == "2:4":
            groups = weight.view(weight.shape[0], -1, 4)  # (out, in / 4, 4)
            smallest = groups.abs().argsort(dim=-1)[..., :2]
            groups.scatter_(-1, smallest, 0.0)
        else:
            k = int(pattern * weight.numel())
            weight.view(-1)[weight.abs().view(-1).argsort()[:k]] = 0.0
    return model


def tiny(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**CONFIG))
    with torch.no_grad():  # larger than the default init, so the logits tell weights apart
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, CONFIG["vocab_size"], (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_bitmask_packs_eight_elements_per_byte_low_bit_first():
    mask = torch.tensor([1, 0, 1, 0, 0, 0, 0, 0, 1], dtype=torch.bool)
    packed = pack_bitmask(mask)
    assert packed.dtype == torch.uint8 and packed.tolist() == [0b101, 0b1]
    assert torch.equal(unpack_bitmask(packed, (9,)), mask)
    odd = torch.rand(5, 13, generator=torch.Generator().manual_seed(0)) > 0.7
    assert torch.equal(unpack_bitmask(pack_bitmask(odd), odd.shape), odd)


@pytest.mark.parametrize("pattern", [0.5, 0.9, 0.97, "2:4"])
def test_a_pruned_model_round_trips_to_identical_logits_and_a_smaller_file(tmp_path, pattern):
    model = prune(tiny(), pattern)
    save_model(model, tmp_path / "dense")
    save_model(model, tmp_path / "sparse", weights_format="sparse")
    assert not (tmp_path / "sparse" / "model.safetensors").exists()

    again = load_sparse(tmp_path / "sparse")
    assert type(again) is BertForSequenceClassification and not again.training
    with torch.no_grad():
        expected = model(**batch()).logits
        assert torch.equal(again(**batch()).logits, expected)
        dense = AutoModelForSequenceClassification.from_pretrained(tmp_path / "dense").eval()
        assert torch.equal(dense(**batch()).logits, expected)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name

    # The file shrinks by what the bitmask saves on each pruned tensor, headers aside.
    saved = 0
    for linear in encoder_linears(model):
        numel, nonzero = linear.weight.numel(), int((linear.weight != 0).sum())
        saved += 4 * numel - (math.ceil(numel / 8) + 4 * nonzero)
    dense_size = os.path.getsize(tmp_path / "dense" / "model.safetensors")
    sparse_size = os.path.getsize(tmp_path / "sparse" / SPARSE_WEIGHTS_NAME)
    assert abs(sparse_size - (dense_size - saved)) < 4096, (dense_size, sparse_size, saved)
    density = 0.5 if pattern == "2:4" else 1 - pattern
    linear_bytes = sum(4 * linear.weight.numel() for linear in encoder_linears(model))
    assert saved == pytest.approx(linear_bytes * (1 - density - 1 / 32), abs=64)


def test_plain_from_pretrained_refuses_a_sparse_export_instead_of_loading_random_weights(tmp_path):
    save_model(prune(tiny(), 0.9), tmp_path, weights_format="sparse")
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_the_dense_format_is_the_default_and_an_unpruned_tensor_stays_as_it_is(tmp_path):
    model = tiny()
    save_model(model, tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / SPARSE_WEIGHTS_NAME).exists()
    with pytest.raises(ValueError, match="a dense export: use from_pretrained"):
        load_sparse(tmp_path)

    tensors, metadata = compress_state_dict(model.state_dict())
    assert sorted(tensors) == sorted(model.state_dict())  # nothing is smaller as a bitmask
    assert json.loads(metadata["rayprune_sparse"])["shapes"] == {}


def test_an_auto_class_or_the_structured_export_class_loads_it(tmp_path):
    from rayprune.methods.structured.models import PrunedBertForSequenceClassification, shrink_model

    model = prune(tiny(), 0.9)
    save_model(model, tmp_path / "plain", weights_format="sparse")
    via_auto = load_sparse(tmp_path / "plain", model_class=AutoModelForSequenceClassification)
    with torch.no_grad():
        assert torch.equal(via_auto(**batch()).logits, model(**batch()).logits)

    with torch.no_grad():  # a structured export: FFN units 0..63 of layer 0 removed, the rest 90% sparse
        block = model.bert.encoder.layer[0]
        block.intermediate.dense.weight[:64] = 0
        block.intermediate.dense.bias[:64] = 0
        block.output.dense.weight[:, :64] = 0
    small = shrink_model(model).eval()
    assert small.bert.encoder.layer[0].intermediate.dense.weight.shape[0] == 64
    save_model(small, tmp_path / "structured", weights_format="sparse")
    again = load_sparse(tmp_path / "structured")
    assert isinstance(again, PrunedBertForSequenceClassification)
    with torch.no_grad():
        assert torch.equal(again(**batch()).logits, small(**batch()).logits)


def test_a_damaged_file_is_refused_naming_the_tensor(tmp_path):
    tensors, metadata = compress_state_dict(prune(tiny(), 0.9).state_dict())
    name = "bert.encoder.layer.0.attention.self.query.weight"
    short = {**tensors, f"{name}.values": tensors[f"{name}.values"][:-1]}
    with pytest.raises(ValueError, match=f"{name}: bitmask marks .* non-zeros but .* values"):
        decompress_state_dict(short, metadata)
    with pytest.raises(ValueError, match="version 2"):
        decompress_state_dict(tensors, {"rayprune_sparse": json.dumps({"version": 2, "shapes": {}})})
    with pytest.raises(ValueError, match="not written by rayprune's sparse export"):
        decompress_state_dict(tensors, {"format": "pt"})


def test_the_file_metadata_records_each_bitmask_tensor_shape(tmp_path):
    model = prune(tiny(), "2:4")
    save_model(model, tmp_path, weights_format="sparse")
    with safe_open(str(tmp_path / SPARSE_WEIGHTS_NAME), framework="pt") as handle:
        shapes = json.loads(handle.metadata()["rayprune_sparse"])["shapes"]
        keys = set(handle.keys())
    names = {name for name, m in model.named_modules() if m in encoder_linears(model)}
    assert set(shapes) == {f"{n}.weight" for n in names}
    assert all(f"{n}.weight.bitmask" in keys and f"{n}.weight" not in keys for n in names)
    assert "classifier.weight" in keys and "bert.embeddings.word_embeddings.weight" in keys


@pytest.fixture
def one_trial_search(tiny_dir, tmp_path, monkeypatch):
    """A search directory of one trained trial (checkpoint written by the real loop)."""
    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer
    from rayprune.training import TrialConfig, TrialSettings, run_training

    task = load_task(DataSpec(task="demo", max_train_samples=48, max_eval_samples=16))
    _, tokenizer = load_model_and_tokenizer(tiny_dir, num_labels=task.num_labels)
    data = tokenize_task(task, tokenizer, max_seq_length=32)
    settings = TrialSettings(model=tiny_dir, metric="accuracy", steps=4, eval_interval=4, batch_size=8, threads=1)
    flat = {"method": "magnitude", "target_sparsity": 0.9, "schedule.start": 0.0, "schedule.end": 0.5}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()

    def report(metrics, writer):
        if writer is not None:
            writer(checkpoint)

    _, _, metrics = run_training(TrialConfig.from_flat(flat, settings), settings, data, report=report)
    meta = {"settings": dataclasses.asdict(settings),
            "spec": {"data": {"task": "demo", "max_train_samples": 48, "max_eval_samples": 16, "max_seq_length": 32}},
            "data": {"task": "demo", "num_labels": 2, "is_regression": False, "data_dir": None}}
    row = {"trial_id": "t1", "method": "magnitude", "accuracy": metrics["accuracy"], "status": "complete",
           "verdict": "ok", "checkpoint": str(checkpoint), "config": json.dumps(flat)}
    monkeypatch.setattr(rayprune.export, "load_search_dir", lambda search_dir: (meta, [row], [row]))
    return tmp_path / "search"


def test_export_writes_the_sparse_format_when_asked_and_it_loads_to_the_dense_exports_logits(one_trial_search,
                                                                                            tmp_path):
    from rayprune.cli import build_parser, main
    from rayprune.export import export_search

    assert build_parser().parse_args(["export", "d", "--out", "o"]).format == "dense"
    [dense] = export_search(one_trial_search, tmp_path / "dense", log=lambda *a: None)
    assert main(["export", str(one_trial_search), "--out", str(tmp_path / "sparse"), "--format", "sparse"]) == 0
    [sparse] = sorted((tmp_path / "sparse").iterdir())
    assert (dense / "model.safetensors").exists() and not (dense / SPARSE_WEIGHTS_NAME).exists()
    assert (sparse / SPARSE_WEIGHTS_NAME).exists() and not (sparse / "model.safetensors").exists()
    info = json.loads((sparse / "rayprune.json").read_text())
    assert SPARSE_WEIGHTS_NAME in info["files"] and info["sparsity"] > 0.8
    assert "load_sparse" in (sparse / "README.md").read_text()
    assert "load_sparse" not in (dense / "README.md").read_text()
    assert os.path.getsize(sparse / SPARSE_WEIGHTS_NAME) < os.path.getsize(dense / "model.safetensors")
    inputs = {"input_ids": torch.tensor([[101, 2023, 3185, 2001, 2307, 102]])}
    with torch.no_grad():
        expected = AutoModelForSequenceClassification.from_pretrained(dense).eval()(**inputs).logits
        assert torch.equal(load_sparse(sparse)(**inputs).logits, expected)

    with pytest.raises(SpecError, match="--format 'zip': allowed: dense, sparse"):
        export_search(one_trial_search, tmp_path / "other", weights_format="zip", log=lambda *a: None)
