"""The physically smaller BERT (rayprune.methods.structured.models) against the masked model it comes from.

Tiny model: hidden d = 32, 4 heads of 8, FFN 64, 2 layers, every parameter random (no exact
zeros), then units zeroed by hand.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

from rayprune.methods.structured.models import (
    FactorizedEmbedding,
    PrunedBertConfig,
    PrunedBertForSequenceClassification,
    dense_encoder_parameter_count,
    encoder_parameter_count,
    factorize_word_embeddings,
    read_pruned_layout,
    shrink_model,
)

D, HEADS, HEAD, FFN = 32, 4, 8, 64


def tiny_bert(seed: int = 0, num_labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS,
        intermediate_size=FFN, num_labels=num_labels,
    ))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@torch.no_grad()
def kill(model, layer, *, query=(), value=(), ffn=()):
    """Zero query units (rows of W_Q, W_K and their biases), value units (row of W_V, its bias,
    column of W_O) and FFN units (row of W_1, its bias, column of W_2) of one layer."""
    block = model.bert.encoder.layer[layer]
    att = block.attention.self
    for k in query:
        for lin in (att.query, att.key):
            lin.weight[k] = 0
            lin.bias[k] = 0
    for k in value:
        att.value.weight[k] = 0
        att.value.bias[k] = 0
        block.attention.output.dense.weight[:, k] = 0
    for j in ffn:
        block.intermediate.dense.weight[j] = 0
        block.intermediate.dense.bias[j] = 0
        block.output.dense.weight[:, j] = 0


def mixed_pruning(model):
    """Heads of every kind: thin QK and VO, QK gone but VO left, VO gone (query units left
    non-zero, the head must still go), a layer without heads and without FFN."""
    kill(model, 0, query=[0, 3, 17] + list(range(24, 32)), value=[4, 5, 20] + list(range(8, 16)),
         ffn=range(0, FFN, 3))
    kill(model, 1, value=range(HEADS * HEAD), query=range(HEAD), ffn=range(FFN))
    return model


def unequal_sizes(model):
    """Layer 0: every head keeps 3 value units but all 8 query units (the padded size comes from
    QK); layer 1: 2 query units and all value units per head (it comes from VO)."""
    kill(model, 0, value=[h * HEAD + j for h in range(HEADS) for j in range(3, HEAD)])
    kill(model, 1, query=[h * HEAD + j for h in range(HEADS) for j in range(2, HEAD)])
    return model


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (4, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def test_layout_is_read_from_the_zeros():
    model = mixed_pruning(tiny_bert())
    layout, kept = read_pruned_layout(model)
    assert layout[0] == {
        # head 0 lost query units 0, 3; head 1 has no value units left -> gone, query units too;
        # head 2 lost query unit 17 and value unit 20; head 3 lost all query units only
        "query_units": [6, 0, 7, 0],
        "value_units": [6, 0, 7, 8],
        "intermediate_size": FFN - len(range(0, FFN, 3)),
    }
    assert layout[1] == {"query_units": [0] * 4, "value_units": [0] * 4, "intermediate_size": 0}
    assert kept[0]["query"].tolist() == [1, 2, 4, 5, 6, 7] + [16] + list(range(18, 24))
    assert kept[0]["value"].tolist() == [0, 1, 2, 3, 6, 7] + [16, 17, 18, 19, 21, 22, 23] + list(range(24, 32))


def test_unit_with_a_nonzero_part_is_kept():
    model = tiny_bert()
    kill(model, 0, query=[5])
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.key.bias[5] = 0.1  # one entry still alive
    layout, _ = read_pruned_layout(model)
    assert layout[0]["query_units"] == [8, 8, 8, 8]


@pytest.mark.parametrize("prune", [mixed_pruning, unequal_sizes, lambda m: m], ids=["mixed", "unequal", "dense"])
def test_shrunk_model_matches_masked_model(prune):
    model = prune(tiny_bert())
    small = shrink_model(model).eval()
    batch = inputs()
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True)
        out = small(**batch, output_hidden_states=True)
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert torch.allclose(a, b, atol=1e-5)
    # the padding mask matters: without it the outputs differ
    with torch.no_grad():
        unmasked = small(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"]).logits
    assert not torch.allclose(unmasked, ref.logits, atol=1e-3)


def test_whole_head_pruning_takes_the_fused_path_and_matches():
    model = tiny_bert()
    kill(model, 0, query=range(8, 16), value=range(8, 16))  # head 1 gone entirely
    kill(model, 1, query=range(0, 16), value=range(0, 16), ffn=range(10))  # heads 0, 1 gone
    small = shrink_model(model).eval()
    assert small.bert.encoder.layer[0].attention.self.uniform
    assert small.bert.encoder.layer[1].attention.self.num_heads == 2
    batch = inputs(1)
    with torch.no_grad():
        assert torch.allclose(small(**batch).logits, model(**batch).logits, atol=1e-5)


def test_parameter_count_and_shapes():
    model = mixed_pruning(tiny_bert())
    small = shrink_model(model)
    dense_encoder = encoder_parameter_count(model)
    assert dense_encoder == dense_encoder_parameter_count(model.config) == 2 * (
        4 * D * D + 4 * D + 2 * D * FFN + FFN + D + 4 * D
    )
    q_units, v_units, f_units = 6 + 7, 6 + 7 + 8, FFN - 22
    expected_layer0 = q_units * (2 * D + 2) + v_units * (2 * D + 1) + f_units * (2 * D + 1) + D + D + 4 * D
    expected_layer1 = D + D + 4 * D  # output biases and LayerNorms only
    assert encoder_parameter_count(small) == expected_layer0 + expected_layer1
    outside = sum(p.numel() for p in model.parameters()) - dense_encoder
    assert sum(p.numel() for p in small.parameters()) == outside + expected_layer0 + expected_layer1
    att = small.bert.encoder.layer[0].attention
    assert att.self.query.weight.shape == (q_units, D)
    assert att.self.value.weight.shape == (v_units, D)
    assert att.output.dense.weight.shape == (D, v_units)
    assert small.bert.encoder.layer[1].intermediate.dense.weight.shape == (0, D)
    assert sorted(small.state_dict()) == sorted(model.state_dict())


def test_save_and_reload_through_auto_class(tmp_path):
    model = mixed_pruning(tiny_bert())
    small = shrink_model(model).eval()
    small.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and "config.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)  # no pickle
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(again, PrunedBertForSequenceClassification)
    assert isinstance(again.config, PrunedBertConfig)
    assert again.config.pruned_layout == small.config.pruned_layout
    batch = inputs(2)
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, small(**batch).logits)
        assert torch.allclose(again(**batch).logits, model(**batch).logits, atol=1e-5)


def test_loss_matches_bert_with_labels():
    model = mixed_pruning(tiny_bert())
    small = shrink_model(model).eval()
    batch = dict(inputs(), labels=torch.tensor([0, 2, 1, 1]))
    with torch.no_grad():
        assert small(**batch).loss.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
    logits, = small(**inputs(), return_dict=False)
    assert logits.shape == (4, 3)


def test_gradients_flow_through_the_pruned_model():
    small = shrink_model(mixed_pruning(tiny_bert())).train()
    loss = small(**inputs(), labels=torch.tensor([0, 2, 1, 1])).loss
    loss.backward()
    assert small.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_shrink_rejects_other_models():
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        shrink_model(nn.Linear(3, 3))


def test_output_attentions_is_refused():
    small = shrink_model(tiny_bert())
    with pytest.raises(ValueError, match="output_attentions"):
        small(**inputs(), output_attentions=True)


# ------------------------------------------------------------------ embedding factorisation (EF)


def test_full_rank_factorisation_reproduces_the_model():
    model = tiny_bert()
    batch = inputs(3)
    with torch.no_grad():
        ref = model(**batch).logits
    before, after = factorize_word_embeddings(model, D)  # rank = hidden size: exact
    assert (before, after) == (100 * D, 100 * D + D * D)
    assert isinstance(model.get_input_embeddings(), FactorizedEmbedding)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, ref, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 4, 12])
def test_truncated_factorisation_is_the_best_rank_r_approximation(rank):
    table = nn.Embedding(100, D)
    with torch.no_grad():
        table.weight.normal_()
    factored = FactorizedEmbedding.from_embedding(table, rank)
    ids = torch.arange(100)
    with torch.no_grad():
        approx = factored(ids)
    # Eckart-Young: squared Frobenius error = sum of the dropped squared singular values
    sigma = torch.linalg.svdvals(table.weight.detach().double())
    error = (approx.double() - table.weight.double()).pow(2).sum()
    assert error.item() == pytest.approx(sigma[rank:].pow(2).sum().item(), rel=1e-4)
    assert sum(p.numel() for p in factored.parameters()) == 100 * rank + rank * D


def test_factorisation_rejects_bad_ranks_and_a_second_pass():
    model = tiny_bert()
    for rank in (0, D + 1, 2.5):
        with pytest.raises(ValueError, match="embedding rank"):
            factorize_word_embeddings(model, rank)
    factorize_word_embeddings(model, 8)
    with pytest.raises(TypeError, match="nn.Embedding"):
        factorize_word_embeddings(model, 8)


def test_shrunk_model_keeps_factorised_embeddings_through_save_and_reload(tmp_path):
    model = tiny_bert()
    factorize_word_embeddings(model, 8)
    model = mixed_pruning(model)
    small = shrink_model(model).eval()
    assert small.config.embedding_rank == 8
    assert isinstance(small.get_input_embeddings(), FactorizedEmbedding)
    assert sorted(small.state_dict()) == sorted(model.state_dict())
    small.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert again.config.embedding_rank == 8
    assert again.bert.embeddings.word_embeddings.codes.weight.shape == (100, 8)
    assert again.bert.embeddings.word_embeddings.projection.weight.shape == (D, 8)
    batch = inputs(4)
    with torch.no_grad():
        assert torch.allclose(again(**batch).logits, model(**batch).logits, atol=1e-5)


def _tiny_head(cls, seed: int = 0):
    """A tiny QA or token-classification BERT with random weights (no exact zeros)."""
    torch.manual_seed(seed)
    model = cls(BertConfig(vocab_size=100, hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS,
                           intermediate_size=FFN, num_labels=2 if cls is BertForQuestionAnswering else 5))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("cls, auto, outputs", [
    (BertForQuestionAnswering, AutoModelForQuestionAnswering, ("start_logits", "end_logits")),
    (BertForTokenClassification, AutoModelForTokenClassification, ("logits",)),
])
def test_qa_and_token_heads_shrink_save_reload_and_match(cls, auto, outputs, tmp_path):
    """Structured pruning of the QA and NER heads: the smaller model gives the masked model's
    outputs and its loss, saves as safetensors and reloads through the task's Auto class."""
    model = mixed_pruning(_tiny_head(cls))
    small = shrink_model(model).eval()
    assert type(small).__name__ == "PrunedBert" + cls.__name__[len("Bert"):]
    assert encoder_parameter_count(small) < encoder_parameter_count(model)
    batch = inputs(3)
    targets = ({"start_positions": torch.tensor([1, 2, 0, 8]), "end_positions": torch.tensor([3, 2, 0, 8])}
               if cls is BertForQuestionAnswering else {"labels": torch.randint(0, 5, (4, 9)).masked_fill(
                   inputs(3)["attention_mask"] == 0, -100)})
    with torch.no_grad():
        ref, out = model(**batch, **targets), small(**batch, **targets)
    for name in outputs:
        assert torch.allclose(getattr(out, name), getattr(ref, name), atol=1e-5)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)
    small.save_pretrained(tmp_path)
    again = auto.from_pretrained(tmp_path).eval()
    assert type(again) is type(small)
    with torch.no_grad():
        for name in outputs:
            assert torch.equal(getattr(again(**batch), name), getattr(small(**batch), name))
