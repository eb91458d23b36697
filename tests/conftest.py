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
