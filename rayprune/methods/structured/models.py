"""A physically smaller BERT: the export format of structured pruning (GRAIN, heads+FFN).

A structured method prunes *units* of a ``BertForSequenceClassification`` by zeroing them in place
(``rayprune.methods.structured.grain``).  :func:`shrink_model` reads which units are gone from those zeros and
copies the kept rows and columns into a :class:`PrunedBertForSequenceClassification`, whose
matrices have the pruned sizes:

* every head keeps its own number of *query units* (rows of W_Q and W_K, the QK dimension) and
  *value units* (rows of W_V and columns of W_O, the VO dimension); the two may differ;
* a head without value units contributes nothing and disappears entirely (its query units too);
* every layer keeps its own FFN width; a layer may lose all heads or all FFN neurons, and then
  only the output biases of that sub-block remain.

The layout is recorded in :class:`PrunedBertConfig` (``pruned_layout``), so the model saves with
``save_pretrained`` (safetensors, no pickle) and reloads through
``AutoModelForSequenceClassification.from_pretrained(dir)`` once this module has been imported
(importing it registers the config and the model with the Auto classes; no ``trust_remote_code``).

Example::

    import rayprune.methods.structured.models   # registers "rayprune_pruned_bert"
    small = rayprune.methods.structured.models.shrink_model(masked_bert)
    small.save_pretrained("out")
    again = AutoModelForSequenceClassification.from_pretrained("out")

Embeddings, the pooler and the classifier are copied unchanged (``BertEmbeddings`` and
``BertPooler`` are reused from transformers).  A word embedding that was factorised before
training (:func:`factorize_word_embeddings`, GRAIN's optional SVD step) stays factorised: the
config records its rank (``embedding_rank``) and the model rebuilds the two factors.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.bert.modeling_bert import BertEmbeddings, BertPooler

try:  # transformers >= 5: init helpers that respect the "already loaded" flags
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = None

__all__ = [
    "FactorizedEmbedding",
    "PrunedBertConfig",
    "PrunedBertForSequenceClassification",
    "PrunedBertForQuestionAnswering",
    "PrunedBertForTokenClassification",
    "factorize_word_embeddings",
    "shrink_model",
    "read_pruned_layout",
    "dense_encoder_parameter_count",
    "encoder_parameter_count",
]

MODEL_TYPE = "rayprune_pruned_bert"


class PrunedBertConfig(BertConfig):
    """``BertConfig`` plus the per-layer sizes left after structured pruning.

    The dense sizes (``hidden_size``, ``num_attention_heads``, ``intermediate_size``) stay those
    of the model that was pruned: the softmax scale is that of the dense head size, and the dense
    parameter count (for density) is computable from them.

    Attributes:
        pruned_layout: one dict per layer, ``{"query_units": [int per head], "value_units":
            [int per head], "intermediate_size": int}``.  ``value_units[h] == 0`` means head h is
            gone (then ``query_units[h] == 0`` too).  ``None`` means dense (every head full).
        embedding_rank: rank r of a factorised word embedding (:class:`FactorizedEmbedding`),
            or ``None`` for the usual ``vocab_size x hidden_size`` table.
    """

    model_type = MODEL_TYPE
    pruned_layout: list | None = None
    embedding_rank: int | None = None

    def layer_layout(self, index: int) -> dict[str, Any]:
        """Sizes of layer ``index`` (dense sizes when ``pruned_layout`` is ``None``)."""
        if self.pruned_layout is None:
            head = self.hidden_size // self.num_attention_heads
            return {
                "query_units": [head] * self.num_attention_heads,
                "value_units": [head] * self.num_attention_heads,
                "intermediate_size": self.intermediate_size,
            }
        return self.pruned_layout[index]


def _linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear`` that may have a zero size (a pruned-away block); torch warns that initialising
    an empty tensor is a no-op, which is exactly what we want here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features, bias=bias)


class FactorizedEmbedding(nn.Module):
    """A word embedding stored as two trained factors, ``E ~ A @ B`` (SPEC §3.4, GRAIN's "EF").

    ``codes`` (an ``nn.Embedding``, vocab x r) looks up a rank-r code per token and
    ``projection`` (an ``nn.Linear`` r -> hidden, no bias) maps it to the hidden size, so the
    table's ``V*H`` parameters become ``V*r + r*H`` (MiniLM-L6 at r = 192: 11.7M -> 5.9M).
    Written here because neither torch nor transformers ships a factorised input embedding
    (ALBERT factorises its embeddings, but inside its own model class).  Built from a trained
    table by :meth:`from_embedding`, which keeps the best rank-r approximation (truncated SVD).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.codes = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)
        self.projection = _linear(rank, embedding_dim, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.projection(self.codes(input_ids))

    @classmethod
    @torch.no_grad()
    def from_embedding(cls, embedding: nn.Embedding, rank: int) -> "FactorizedEmbedding":
        """Truncated SVD of ``embedding.weight`` = U S V^T: codes = U_r S_r, projection = V_r^T.

        By Eckart-Young the product is the closest rank-``rank`` matrix to the table (the squared
        Frobenius error is the sum of the dropped squared singular values); at
        ``rank = min(V, H)`` it reproduces the table up to float rounding.
        """
        weight = embedding.weight.detach()
        vocab, dim = weight.shape
        if not (isinstance(rank, int) and 1 <= rank <= min(vocab, dim)):
            raise ValueError(f"embedding rank must be an int in [1, {min(vocab, dim)}], got rank={rank!r}")
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        module = cls(vocab, dim, rank, padding_idx=embedding.padding_idx).to(weight.device, weight.dtype)
        module.codes.weight.copy_(u[:, :rank] * s[:rank])
        module.projection.weight.copy_(vh[:rank].t())  # nn.Linear stores (out=H, in=r)
        return module


def factorize_word_embeddings(model: nn.Module, rank: int) -> tuple[int, int]:
    """Replace ``model``'s input word embedding by its rank-``rank`` :class:`FactorizedEmbedding`,
    in place (before training, so the optimizer sees the two factors).

    Returns:
        (parameters before, parameters after) of the word embedding.

    Raises:
        TypeError: the input embedding is not an ``nn.Embedding`` (already factorised, or a
            model without ``get_input_embeddings``).
        ValueError: ``rank`` outside ``[1, min(vocab, hidden)]``.
    """
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, nn.Embedding):
        raise TypeError(
            f"factorize_word_embeddings needs an nn.Embedding input embedding, got {type(embedding).__name__}"
        )
    factorized = FactorizedEmbedding.from_embedding(embedding, rank)
    model.set_input_embeddings(factorized)
    return embedding.weight.numel(), sum(p.numel() for p in factorized.parameters())


class PrunedBertSelfAttention(nn.Module):
    """Multi-head self-attention whose heads have their own QK and VO sizes.

    ``query``/``key`` map ``hidden -> sum(qk)`` and ``value`` maps ``hidden -> sum(vo)``, heads
    concatenated in order (the parameters of ``BertSelfAttention`` with fewer rows).  The forward
    runs the three projections as one GEMM, then zero-pads every head's q, k and v to one common
    size P (the layer's largest QK or VO size): a zero coordinate adds exactly nothing to q.k, and
    the padded value columns are dropped again after attention.  Equal sizes let one fused
    ``scaled_dot_product_attention`` call serve all heads, and equal q/k/v sizes let torch use its
    fused CPU kernel (with unequal ones it falls back to the unfused maths path, ~3x slower on
    small heads).  When every head already has P = QK = VO (dense, or whole-head pruning) no
    padding is done at all.
    """

    def __init__(self, config: PrunedBertConfig, query_units: list[int], value_units: list[int]):
        super().__init__()
        kept = [h for h, v in enumerate(value_units) if v > 0]
        self.qk_sizes = [int(query_units[h]) for h in kept]  # per kept head
        self.vo_sizes = [int(value_units[h]) for h in kept]
        self.num_heads = len(kept)
        dense_head = config.hidden_size // config.num_attention_heads
        # The dense model's scale, whatever the pruned QK size: the masked model computes exactly
        # this, and the pruned coordinates are zeros that the scale does not see.
        self.scaling = dense_head**-0.5
        self.dropout_p = config.attention_probs_dropout_prob
        self.query = _linear(config.hidden_size, sum(self.qk_sizes))
        self.key = _linear(config.hidden_size, sum(self.qk_sizes))
        self.value = _linear(config.hidden_size, sum(self.vo_sizes))
        # Heads without query units still attend (uniformly): P >= 1 gives them a zero coordinate.
        self.head_size = max(self.qk_sizes + self.vo_sizes + [1])
        self.uniform = all(n == self.head_size for n in self.qk_sizes + self.vo_sizes)
        # Index tensors are built lazily per device (never registered as buffers: models are
        # instantiated on the meta device when loaded, and these are derived from the config).
        self._index_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(pad, unpad): ``pad`` picks, for each of q, k, v, head and padded coordinate, a column
        of the fused projection output (its last column, appended, is zero); ``unpad`` picks the
        real value columns out of the (heads * P) attention output."""
        if device not in self._index_cache:
            n_qk, n_vo = sum(self.qk_sizes), sum(self.vo_sizes)
            zero = 2 * n_qk + n_vo  # index of the appended zero column
            size = self.head_size
            pad, unpad = [], []
            for offset, sizes in ((0, self.qk_sizes), (n_qk, self.qk_sizes), (2 * n_qk, self.vo_sizes)):
                start = offset
                for n in sizes:
                    pad += list(range(start, start + n)) + [zero] * (size - n)
                    start += n
            for h, n in enumerate(self.vo_sizes):
                unpad += range(h * size, h * size + n)
            self._index_cache[device] = (
                torch.tensor(pad, dtype=torch.long, device=device),
                torch.tensor(unpad, dtype=torch.long, device=device),
            )
        return self._index_cache[device]

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        if self.num_heads == 0:
            return hidden_states.new_zeros(batch, length, 0)
        # One GEMM for the three projections: (B, L, 2 * sum(qk) + sum(vo)).
        qkv = F.linear(
            hidden_states,
            torch.cat([self.query.weight, self.key.weight, self.value.weight]),
            torch.cat([self.query.bias, self.key.bias, self.value.bias]),
        )
        if not self.uniform:
            pad, unpad = self._indices(hidden_states.device)
            qkv = F.pad(qkv, (0, 1)).index_select(-1, pad)  # (B, L, 3 * heads * P)
        # (B, L, 3, heads, P) -> three (B, heads, L, P)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attention_mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=self.scaling,
        )  # (B, heads, L, P)
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)
        if not self.uniform:
            context = context.index_select(-1, unpad)  # (B, L, sum(vo))
        return context


class PrunedBertSelfOutput(nn.Module):
    """W_O (``sum(vo) -> hidden``), dropout, residual and LayerNorm, as ``BertSelfOutput``."""

    def __init__(self, config: PrunedBertConfig, in_features: int):
        super().__init__()
        self.dense = _linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class PrunedBertAttention(nn.Module):
    def __init__(self, config: PrunedBertConfig, layout: dict[str, Any]):
        super().__init__()
        self.self = PrunedBertSelfAttention(config, layout["query_units"], layout["value_units"])
        self.output = PrunedBertSelfOutput(config, sum(self.self.vo_sizes))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden_states, attention_mask), hidden_states)


class PrunedBertIntermediate(nn.Module):
    def __init__(self, config: PrunedBertConfig, size: int):
        super().__init__()
        self.dense = _linear(config.hidden_size, size)
        act = config.hidden_act
        self.intermediate_act_fn = ACT2FN[act] if isinstance(act, str) else act

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class PrunedBertOutput(nn.Module):
    def __init__(self, config: PrunedBertConfig, size: int):
        super().__init__()
        self.dense = _linear(size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class PrunedBertLayer(nn.Module):
    """One encoder block with the module names of ``BertLayer`` (state-dict keys match BERT's)."""

    def __init__(self, config: PrunedBertConfig, layout: dict[str, Any]):
        super().__init__()
        self.attention = PrunedBertAttention(config, layout)
        self.intermediate = PrunedBertIntermediate(config, int(layout["intermediate_size"]))
        self.output = PrunedBertOutput(config, int(layout["intermediate_size"]))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class PrunedBertEncoder(nn.Module):
    def __init__(self, config: PrunedBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            PrunedBertLayer(config, config.layer_layout(i)) for i in range(config.num_hidden_layers)
        )


class PrunedBertModel(nn.Module):
    """Embeddings + pruned encoder (+ pooler), named like ``BertModel``."""

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        if config.embedding_rank:
            self.embeddings.word_embeddings = FactorizedEmbedding(
                config.vocab_size, config.hidden_size, int(config.embedding_rank), config.pad_token_id
            )
        self.encoder = PrunedBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None


class _PrunedBertPreTrainedModel(PreTrainedModel):
    """What the three heads share: the config class, weight init and the encoder's forward."""

    config_class = PrunedBertConfig
    base_model_prefix = "bert"
    main_input_name = "input_ids"

    def _check_layout(self, config: PrunedBertConfig) -> None:
        if config.pruned_layout is not None and len(config.pruned_layout) != config.num_hidden_layers:
            raise ValueError(
                f"pruned_layout has {len(config.pruned_layout)} layers, expected "
                f"num_hidden_layers={config.num_hidden_layers}"
            )

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertEmbeddings):
            # Non-persistent buffers are not in the checkpoint: rebuild them (as BERT does).
            positions = torch.arange(module.position_ids.shape[-1]).expand((1, -1))
            if _init is not None:
                _init.copy_(module.position_ids, positions)
                _init.zeros_(module.token_type_ids)
            else:  # pragma: no cover - transformers 4.x
                with torch.no_grad():
                    module.position_ids.copy_(positions)
                    module.token_type_ids.zero_()

    def get_input_embeddings(self) -> nn.Module:
        return self.bert.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.bert.embeddings.word_embeddings = value

    def _encode(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                output_hidden_states, output_attentions) -> tuple[torch.Tensor, list | None]:
        """(last hidden states (B, L, d), every layer's hidden states or None)."""
        if output_attentions:
            raise ValueError(
                f"output_attentions=True is not supported by {type(self).__name__} "
                "(heads have different sizes and are fused); use output_attentions=False"
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden = self.bert.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
        )
        mask = _additive_mask(attention_mask, hidden.dtype)
        all_hidden = [hidden] if output_hidden_states else None
        for layer in self.bert.encoder.layer:
            hidden = layer(hidden, mask)
            if all_hidden is not None:
                all_hidden.append(hidden)
        return hidden, all_hidden


class PrunedBertForQuestionAnswering(_PrunedBertPreTrainedModel):
    """The physically smaller ``BertForQuestionAnswering``: ``qa_outputs`` on every token's
    hidden state gives start and end logits; the loss is BERT's (mean of the start and end
    cross-entropies, positions outside the sequence ignored)."""

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        self._check_layout(config)
        self.num_labels = config.num_labels
        self.bert = PrunedBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, **kwargs: Any):
        hidden, all_hidden = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                          output_hidden_states, output_attentions)
        logits = self.qa_outputs(hidden)  # (B, L, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions past the sequence are clamped and ignored
            start = start_positions.view(-1).clamp(0, ignored)
            end = end_positions.view(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        output = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        return output.to_tuple() if return_dict is False else output


class PrunedBertForTokenClassification(_PrunedBertPreTrainedModel):
    """The physically smaller ``BertForTokenClassification``: a classifier on every token's
    hidden state; cross-entropy over the tokens whose label is not -100."""

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        self._check_layout(config)
        self.num_labels = config.num_labels
        self.bert = PrunedBertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, output_attentions=None,
                return_dict=None, **kwargs: Any):
        hidden, all_hidden = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                          output_hidden_states, output_attentions)
        logits = self.classifier(self.dropout(hidden))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=-100)
        output = TokenClassifierOutput(loss=loss, logits=logits,
                                       hidden_states=tuple(all_hidden) if all_hidden is not None else None)
        return output.to_tuple() if return_dict is False else output


class PrunedBertForSequenceClassification(_PrunedBertPreTrainedModel):
    """BERT sequence classifier with per-head and per-layer pruned sizes (see the module doc).

    State-dict keys are those of ``BertForSequenceClassification``; only the shapes differ.  The
    forward takes the usual inputs and returns a ``SequenceClassifierOutput`` (``hidden_states``
    with ``output_hidden_states=True``; attention weights are not available).
    """

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        self._check_layout(config)
        self.num_labels = config.num_labels
        self.bert = PrunedBertModel(config)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple:
        hidden, all_hidden = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                          output_hidden_states, output_attentions)
        logits = self.classifier(self.dropout(self.bert.pooler(hidden)))
        loss = self._loss(logits, labels) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        if return_dict is False:
            return output.to_tuple()
        return output

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss ``BertForSequenceClassification`` computes, chosen by ``problem_type``."""
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def _additive_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) 1/0 padding mask -> (B, 1, 1, L) additive mask (0 or the dtype's minimum), or
    ``None`` when nothing is padded (lets SDPA take its unmasked kernel).  Additive rather than
    boolean so that a fully padded row gives uniform weights instead of NaN, as BERT's eager path."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


# ---------------------------------------------------------------------------------------- shrink


def _all_zero_rows(*tensors: torch.Tensor) -> torch.Tensor:
    """True for index i when row i of every tensor is exactly zero (1-D tensors: entry i)."""
    zero = None
    for t in tensors:
        z = (t == 0) if t.dim() == 1 else (t == 0).all(dim=1)
        zero = z if zero is None else zero & z
    return zero


#: The dense heads shrink_model rebuilds -> (their smaller class, the head modules copied whole).
_HEADS = {
    BertForSequenceClassification: (PrunedBertForSequenceClassification, ("classifier",)),
    BertForQuestionAnswering: (PrunedBertForQuestionAnswering, ("qa_outputs",)),
    BertForTokenClassification: (PrunedBertForTokenClassification, ("classifier",)),
}


def _bert_parts(model: nn.Module):
    if type(model) not in _HEADS:
        raise TypeError(
            "shrink_model needs a transformers BertForSequenceClassification, BertForQuestionAnswering or "
            f"BertForTokenClassification (a BERT-family encoder with BERT's module names), got {type(model).__name__}"
        )
    config = model.config
    if config.is_decoder or config.add_cross_attention:
        raise ValueError("shrink_model supports encoder-only BERT (is_decoder=False, no cross-attention)")
    return model.bert, config


@torch.no_grad()
def read_pruned_layout(model: nn.Module) -> tuple[list[dict[str, Any]], list[dict[str, torch.Tensor]]]:
    """Which units of a masked ``BertForSequenceClassification`` are pruned, read from its zeros.

    A unit is pruned iff all of its parameters are exactly zero:

    * query unit k: row k of W_Q and W_K and entry k of b_Q and b_K;
    * value unit k: row k of W_V, entry k of b_V and column k of W_O;
    * FFN unit j: row j of W_1, entry j of b_1 and column j of W_2.

    A head without value units is removed whole, whatever its query units hold (its output is
    exactly zero).

    Returns:
        (layout, kept): ``layout`` as :attr:`PrunedBertConfig.pruned_layout`; ``kept`` per layer
        ``{"query": LongTensor, "value": LongTensor, "ffn": LongTensor}`` of kept dense indices,
        heads in order.
    """
    bert, config = _bert_parts(model)
    heads = config.num_attention_heads
    layout, kept = [], []
    for layer in bert.encoder.layer:
        att = layer.attention.self
        head = att.attention_head_size
        q_dead = _all_zero_rows(att.query.weight, att.query.bias, att.key.weight, att.key.bias)
        v_dead = _all_zero_rows(
            att.value.weight, att.value.bias, layer.attention.output.dense.weight.t()
        )
        f_dead = _all_zero_rows(
            layer.intermediate.dense.weight, layer.intermediate.dense.bias, layer.output.dense.weight.t()
        )
        q_keep, v_keep = ~q_dead.view(heads, head), ~v_dead.view(heads, head)  # (heads, head)
        q_keep &= v_keep.any(dim=1, keepdim=True)  # a head without value units goes entirely
        layout.append({
            "query_units": [int(n) for n in q_keep.sum(dim=1)],
            "value_units": [int(n) for n in v_keep.sum(dim=1)],
            "intermediate_size": int((~f_dead).sum()),
        })
        kept.append({
            "query": q_keep.reshape(-1).nonzero().squeeze(1).cpu(),
            "value": v_keep.reshape(-1).nonzero().squeeze(1).cpu(),
            "ffn": (~f_dead).nonzero().squeeze(1).cpu(),
        })
    return layout, kept


@torch.no_grad()
def shrink_model(model: nn.Module) -> _PrunedBertPreTrainedModel:
    """Copy a masked BERT (sequence classifier, QA or token-classification head) into a
    physically smaller model with the same head.

    Called by structured methods' ``finalize`` (and usable on any BERT classifier whose pruned
    units are exactly zero).  In eval mode the result computes the same outputs as ``model`` up
    to float summation order (padding masks included).

    Args:
        model: the masked model; it is not modified.

    Returns:
        a :class:`PrunedBertForSequenceClassification` (or the QA / token-classification twin)
        on ``model``'s device and dtype.

    Raises:
        TypeError: ``model`` is not one of those BERT heads.
    """
    bert, config = _bert_parts(model)
    layout, kept = read_pruned_layout(model)
    values = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        values.pop(key, None)
    values["pruned_layout"] = layout
    words = bert.embeddings.word_embeddings
    values["embedding_rank"] = words.rank if isinstance(words, FactorizedEmbedding) else None
    small_class, head_modules = _HEADS[type(model)]
    values["architectures"] = [small_class.__name__]
    new_config = PrunedBertConfig(**values)
    param = next(model.parameters())
    small = small_class(new_config).to(device=param.device, dtype=param.dtype)
    small.train(model.training)

    # Everything outside the encoder blocks is copied whole.
    small.bert.embeddings.load_state_dict(bert.embeddings.state_dict())
    if small.bert.pooler is not None:
        small.bert.pooler.load_state_dict(bert.pooler.state_dict())
    for name in head_modules:
        getattr(small, name).load_state_dict(getattr(model, name).state_dict())
    for src, dst, idx in zip(bert.encoder.layer, small.bert.encoder.layer, kept):
        q, v, f = (idx[k].to(param.device) for k in ("query", "value", "ffn"))
        s_att, d_att = src.attention.self, dst.attention.self
        for name, rows in (("query", q), ("key", q), ("value", v)):
            getattr(d_att, name).weight.copy_(getattr(s_att, name).weight[rows])
            getattr(d_att, name).bias.copy_(getattr(s_att, name).bias[rows])
        dst.attention.output.dense.weight.copy_(src.attention.output.dense.weight[:, v])
        dst.attention.output.dense.bias.copy_(src.attention.output.dense.bias)
        dst.attention.output.LayerNorm.load_state_dict(src.attention.output.LayerNorm.state_dict())
        dst.intermediate.dense.weight.copy_(src.intermediate.dense.weight[f])
        dst.intermediate.dense.bias.copy_(src.intermediate.dense.bias[f])
        dst.output.dense.weight.copy_(src.output.dense.weight[:, f])
        dst.output.dense.bias.copy_(src.output.dense.bias)
        dst.output.LayerNorm.load_state_dict(src.output.LayerNorm.state_dict())
    return small


# ------------------------------------------------------------------------------- param counting


def dense_encoder_parameter_count(config: BertConfig) -> int:
    """Parameters of the dense encoder blocks that ``config`` describes (Q, K, V, O, FFN, their
    biases and both LayerNorms per layer: GRAIN's 85.1M for BERT-base)."""
    d, ffn = config.hidden_size, config.intermediate_size
    per_layer = 4 * d * d + 4 * d + 2 * d * ffn + ffn + d + 4 * d
    return config.num_hidden_layers * per_layer


def encoder_parameter_count(model: nn.Module) -> int:
    """Parameters inside the encoder blocks of a BERT or pruned BERT classifier."""
    return sum(p.numel() for p in model.bert.encoder.parameters())


AutoConfig.register(MODEL_TYPE, PrunedBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(
    PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True
)
AutoModelForQuestionAnswering.register(PrunedBertConfig, PrunedBertForQuestionAnswering, exist_ok=True)
AutoModelForTokenClassification.register(PrunedBertConfig, PrunedBertForTokenClassification, exist_ok=True)
