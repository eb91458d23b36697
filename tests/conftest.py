"""Shared fixtures: a tiny BERT built from a config (no download) and a tiny labelled batch.

Everything here runs on the CPU in milliseconds.  Dropout is off so that two models built with
the same seed give identical outputs and gradients, which the determinism checks rely on.
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

# Nothing in the test suite may reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _one_ray_token_for_the_session() -> None:
    """Ray reads its auth mode and token once per process, at its first import.  Every Ray test
    here (in-process ``ray.init()``, clusters started with ``ray start``, CLI subprocesses) uses
    token authentication with the per-user token file, set before anything imports Ray, so the
    order in which test files run cannot lock a later one out."""
    import secrets
    from pathlib import Path

    token_file = Path.home() / ".ray" / "auth_token"
    if not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(token_file))


_one_ray_token_for_the_session()

# rayprune's cache (the empty MLflow store new searches copy) lives in a directory of this test
# session, not the user's ~/.cache: the first store a test creates becomes the template the
# later ones copy, as on a user's machine.
if "RAYPRUNE_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["RAYPRUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="rayprune-test-cache-")
    atexit.register(shutil.rmtree, os.environ["RAYPRUNE_CACHE_DIR"], ignore_errors=True)

#: BertConfig fields of the tiny model: 2 layers, hidden 32, 4 heads of 8, FFN 64, 2 labels.
TINY_BERT_CONFIG = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
    num_labels=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
TINY_BATCH_SIZE = 4
TINY_SEQ_LEN = 8


@pytest.fixture
def make_tiny_bert() -> Callable[..., torch.nn.Module]:
    """Factory: ``make_tiny_bert(seed=0, **config_overrides)`` builds a fresh tiny
    ``BertForSequenceClassification`` whose weights depend only on ``seed``."""
    from transformers import BertConfig, BertForSequenceClassification

    def make(seed: int = 0, **overrides) -> torch.nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BertForSequenceClassification(BertConfig(**{**TINY_BERT_CONFIG, **overrides}))
        return model.train()

    return make


@pytest.fixture
def tiny_bert(make_tiny_bert) -> torch.nn.Module:
    """A tiny BERT classifier (seed 0, train mode; ~38k parameters)."""
    return make_tiny_bert()


@pytest.fixture
def tiny_batch() -> dict[str, torch.Tensor]:
    """A fixed batch for :func:`tiny_bert`: ``input_ids``, ``token_type_ids``,
    ``attention_mask`` (the last two tokens of rows 2 and 3 are padding) and ``labels``,
    all (4, 8) except labels (4,)."""
    gen = torch.Generator().manual_seed(1234)
    shape = (TINY_BATCH_SIZE, TINY_SEQ_LEN)
    input_ids = torch.randint(1, TINY_BERT_CONFIG["vocab_size"], shape, generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2:, -2:] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)  # id 0 = [PAD]
    return {
        "input_ids": input_ids,
        "token_type_ids": torch.zeros_like(input_ids),
        "attention_mask": attention_mask,
        "labels": torch.tensor([0, 1, 0, 1]),
    }


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """The tiny BERT saved like a hub model (``helpers.save_tiny_bert``: config-built, the
    bundled MiniLM tokenizer), once per session, for tests that load a model by directory."""
    from helpers import save_tiny_bert

    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def demo_data_of(tiny_dir) -> Callable:
    """Factory: ``demo_data_of(train, eval)`` is the built-in demo task with that many train and
    eval examples, tokenised for :func:`tiny_dir` at 32 tokens; each size is built once per
    session."""
    from rayprune.data import DataSpec, load_task, tokenize_task
    from rayprune.models import load_model_and_tokenizer

    built: dict[tuple[int, int], object] = {}

    def of(train: int, eval: int):
        if (train, eval) not in built:
            task = load_task(DataSpec(task="demo", max_train_samples=train, max_eval_samples=eval))
            _, tokenizer = load_model_and_tokenizer(tiny_dir, num_labels=task.num_labels)
            built[train, eval] = tokenize_task(task, tokenizer, max_seq_length=32)
        return built[train, eval]

    return of
