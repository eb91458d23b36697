"""Plain helpers shared by the trial and integration tests (the fixtures built on them are in
conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("RAYPRUNE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
GLUE_DIR = SHARED / "data" / "glue"
NO_GLUE_REASON = f"real GLUE data not found at {GLUE_DIR} (the ../shared checkout is absent)"


def save_tiny_bert(directory: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """A tiny config-built BERT classifier plus the bundled MiniLM tokenizer, saved like a hub
    model, so every code path that takes a model id or directory can be exercised in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rayprune.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128,
        num_labels=2,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
