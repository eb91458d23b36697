"""Fixtures of the data-layer tests."""

import os

import pytest

from rayprune.data import DATA_DIR_ENV


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    # A data dir set in the developer's shell must not change what these tests load.
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled MiniLM tokenizer (BERT uncased WordPiece), loaded without the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from rayprune.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("bundled:minilm-l6"))
