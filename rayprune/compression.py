"""Sparse exports: store a pruned model's zeros as a bitmask instead of as zeros.

A dense ``model.safetensors`` of a 97%-sparse model is as large as the dense model's.  The
``sparse`` export format writes ``rayprune-sparse.safetensors`` instead, in which every tensor
that gets smaller that way is stored as

* ``<name>.bitmask``: ``uint8``, one bit per element of the flattened tensor (1 = non-zero;
  element ``8 * j + i`` is bit ``i`` of byte ``j``), ``ceil(numel / 8)`` bytes;
* ``<name>.values``: the non-zero elements in row-major order, in the tensor's own dtype;

and its shape is kept in the file's metadata (``rayprune_sparse``, JSON).  Every other tensor
(biases, LayerNorms, unpruned embeddings, structured exports' smaller matrices) is stored as is,
under its own name.  A tensor is worth a bitmask when ``numel / 8 + nnz * itemsize`` bytes are
fewer than ``numel * itemsize``: below about 97% density in float32, 94% in float16.  2:4
sparsity needs no format of its own: a bitmask costs 4 bits per group of four, as many as two
2-bit positions would.

**This format is rayprune's own.**  The ``compressed-tensors`` library's ``sparse-bitmask``
format would be the one other tools read, but with the pinned stack it cannot be used: its
sparse compressors were removed in compressed-tensors 0.15.0, the transformers 5.x integration
needs >= 0.15.0 and has no ``sparsity_config`` any more, and such a checkpoint then loads with
the pruned weights *missing and randomly initialised* (a load-report warning, no error).  So the
sparse export writes no ``model.safetensors`` and no ``quantization_config``: a plain
``from_pretrained(<dir>)`` fails loudly (no weights file) instead of loading wrong weights, and
:func:`load_sparse` rebuilds the dense tensors and hands them to the model class's
``from_pretrained``.

The dense format stays the default: it is what every runtime reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["FORMATS", "SPARSE_WEIGHTS_NAME", "compress_state_dict", "decompress_state_dict",
           "load_sparse", "pack_bitmask", "save_model", "sparse_card_note", "unpack_bitmask"]

#: ``rayprune export --format`` values: ``dense`` (``save_pretrained``) and ``sparse`` (this module).
FORMATS = ("dense", "sparse")
#: The weights file of a sparse export; deliberately not a name ``from_pretrained`` looks for.
SPARSE_WEIGHTS_NAME = "rayprune-sparse.safetensors"
#: Safetensors metadata key: ``{"version": 1, "shapes": {name: shape}}`` for bitmask-stored tensors.
METADATA_KEY = "rayprune_sparse"
FORMAT_VERSION = 1
_DENSE_WEIGHTS = "model.safetensors"
_BIT_WEIGHTS = 1 << torch.arange(8, dtype=torch.int64)  # bit i of a byte has weight 2**i


def pack_bitmask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into ``uint8`` bytes, eight elements per byte, flattened row-major
    (element ``8 * j + i`` -> bit ``i`` of byte ``j``; the last byte is zero-padded)."""
    flat = mask.reshape(-1).to(torch.int64)
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8))
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(dim=1).to(torch.uint8)  # (ceil(n / 8),)


def unpack_bitmask(packed: torch.Tensor, shape) -> torch.Tensor:
    """The boolean tensor of ``shape`` that :func:`pack_bitmask` packed into ``packed``."""
    numel = int(torch.Size(shape).numel())
    bits = (packed.to(torch.int64).view(-1, 1) & _BIT_WEIGHTS) != 0  # (bytes, 8)
    return bits.reshape(-1)[:numel].reshape(shape)


def _bitmask_bytes(tensor: torch.Tensor, nonzero: int) -> int:
    return (tensor.numel() + 7) // 8 + nonzero * tensor.element_size()


def compress_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split ``state_dict`` into the tensors and metadata of a sparse weights file.

    Floating-point tensors that are smaller as bitmask + values are stored that way; all others
    as they are.

    Returns:
        ``(tensors, metadata)`` for ``safetensors.torch.save_file``.

    Raises:
        ValueError: a tensor name collides with a ``.values`` / ``.bitmask`` name of another.
    """
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.numel() > 0:
            mask = tensor != 0
            nonzero = int(mask.sum())
            if _bitmask_bytes(tensor, nonzero) < tensor.numel() * tensor.element_size():
                tensors[f"{name}.bitmask"] = pack_bitmask(mask)
                tensors[f"{name}.values"] = tensor[mask].contiguous()  # row-major order
                shapes[name] = list(tensor.shape)
                continue
        tensors[name] = tensor.contiguous()
    clashes = sorted(set(state_dict) & {k for n in shapes for k in (f"{n}.bitmask", f"{n}.values")})
    if clashes:
        raise ValueError(f"cannot store {clashes} beside the bitmask of another tensor of the same name; "
                         f"export with --format dense")
    metadata = {"format": "pt", METADATA_KEY: json.dumps({"version": FORMAT_VERSION, "shapes": shapes})}
    return tensors, metadata


def decompress_state_dict(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                          *, source: str = "the sparse weights") -> dict[str, torch.Tensor]:
    """The dense state dict that :func:`compress_state_dict` split into ``tensors`` + ``metadata``.

    Raises:
        ValueError: the metadata is missing or of another version, or a tensor's bitmask, values
            and shape disagree (``source`` names the file in the message).
    """
    try:
        info = json.loads((metadata or {})[METADATA_KEY])
        shapes = info["shapes"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{source}: no {METADATA_KEY!r} metadata; not written by rayprune's sparse export") from None
    if info.get("version") != FORMAT_VERSION:
        raise ValueError(f"{source}: sparse format version {info.get('version')!r}, this rayprune reads "
                         f"version {FORMAT_VERSION}; upgrade rayprune")
    state_dict = {}
    stored = {f"{n}.{part}" for n in shapes for part in ("bitmask", "values")}
    for name, tensor in tensors.items():
        if name not in stored:
            # Own memory: a view into the loaded file's buffer can sit at an offset that changes
            # which SIMD path a CPU matmul takes, and so the logits' last bits.
            state_dict[name] = tensor.clone()
    for name, shape in shapes.items():
        try:
            packed, values = tensors[f"{name}.bitmask"], tensors[f"{name}.values"]
        except KeyError as err:
            raise ValueError(f"{source}: {name}: {err.args[0]} is missing") from None
        numel = int(torch.Size(shape).numel())
        if packed.dtype != torch.uint8 or packed.numel() != (numel + 7) // 8:
            raise ValueError(f"{source}: {name}: bitmask has {packed.numel()} {packed.dtype} elements, "
                             f"expected {(numel + 7) // 8} uint8 for shape {shape}")
        mask = unpack_bitmask(packed, shape)
        if int(mask.sum()) != values.numel():
            raise ValueError(f"{source}: {name}: bitmask marks {int(mask.sum())} non-zeros but "
                             f"{values.numel()} values are stored")
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[mask] = values
        state_dict[name] = dense
    return state_dict


def save_model(model, directory: str | Path, *, weights_format: str = "dense") -> None:
    """Save ``model`` (a transformers ``PreTrainedModel``) into ``directory`` in ``weights_format``.

    ``dense`` is ``save_pretrained``.  ``sparse`` is ``save_pretrained`` too (config, custom
    code, the exact tensors it saves: tied weights once, names as on disk), after which its
    ``model.safetensors`` is rewritten as :data:`SPARSE_WEIGHTS_NAME` and removed.

    Raises:
        ValueError: unknown ``weights_format`` (lists the allowed ones).
    """
    from safetensors.torch import load_file, save_file

    if weights_format not in FORMATS:
        raise ValueError(f"weights format must be one of {list(FORMATS)}, got {weights_format!r}")
    directory = Path(directory)
    if weights_format == "dense":
        model.save_pretrained(directory, safe_serialization=True)
        return
    # One shard whatever the size: the sparse file is written from a single dense file.
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="1000GB")
    dense = directory / _DENSE_WEIGHTS
    tensors, metadata = compress_state_dict(load_file(dense))
    save_file(tensors, directory / SPARSE_WEIGHTS_NAME, metadata=metadata)
    os.remove(dense)


def sparse_card_note(weights_format: str, auto_model: str) -> str:
    """The model card's paragraph on how to load a sparse export ("" for a dense one)."""
    if weights_format == "dense":
        return ""
    return f"""
## Sparse weights file

This export stores its weights as `{SPARSE_WEIGHTS_NAME}` (rayprune's own format: each pruned
tensor as a bitmask of its non-zeros plus their values), not `model.safetensors`, so
`from_pretrained(<this directory>)` alone finds no weights. Load it with rayprune installed:

```python
from transformers import {auto_model}
from rayprune.compression import load_sparse

model = load_sparse("<this directory>", model_class={auto_model})
model.save_pretrained("<dense directory>")  # a dense copy for any runtime, if needed
```
"""


def _model_class(config):
    """The class ``config.architectures`` names: from transformers, else rayprune's structured
    exports' classes."""
    import transformers

    import rayprune.methods.structured.models as structured

    names = getattr(config, "architectures", None) or []
    if names:
        found = getattr(transformers, names[0], None)
        if found is None:
            found = getattr(structured, names[0], None)
        if found is not None:
            return found
    raise ValueError(f"config.architectures={names!r} names no class transformers or rayprune provides; "
                     f"pass model_class=<the model class> to load_sparse")


def load_sparse(directory: str | Path, *, model_class=None, **from_pretrained_kwargs):
    """Load a ``rayprune export --format sparse`` directory: the model, equal to the dense export's.

    The dense tensors are rebuilt from :data:`SPARSE_WEIGHTS_NAME` and passed as ``state_dict``
    to ``model_class.from_pretrained`` with the directory's config; every key must match.

    Args:
        directory: the export entry (``config.json`` + :data:`SPARSE_WEIGHTS_NAME`).
        model_class: the class to build, e.g. ``AutoModelForSequenceClassification`` (default:
            the class named by ``config.architectures``).
        **from_pretrained_kwargs: passed on (e.g. ``dtype``, ``trust_remote_code``).

    Raises:
        ValueError: no sparse weights file, a malformed one, or keys that do not match the model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from rayprune.models import register_pruned_models

    directory = Path(directory)
    path = directory / SPARSE_WEIGHTS_NAME
    if not path.is_file():
        hint = " (a dense export: use from_pretrained)" if (directory / _DENSE_WEIGHTS).is_file() else ""
        raise ValueError(f"{directory}: no {SPARSE_WEIGHTS_NAME}{hint}")
    register_pruned_models()  # a structured export's config type and classes
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state_dict = decompress_state_dict(load_file(path), metadata, source=str(path))
    config = AutoConfig.from_pretrained(
        directory, trust_remote_code=from_pretrained_kwargs.get("trust_remote_code", False))
    cls = model_class if model_class is not None else _model_class(config)
    if hasattr(cls, "_model_mapping"):  # an Auto class: from_pretrained(None, ...) needs the concrete one
        try:
            cls = cls._model_mapping[type(config)]
        except KeyError:
            raise ValueError(f"{cls.__name__} has no class for {type(config).__name__}; pass the model class "
                             f"itself as model_class") from None
    model, info = cls.from_pretrained(None, config=config, state_dict=state_dict, output_loading_info=True,
                                      **from_pretrained_kwargs)
    wrong = {kind: sorted(info[kind]) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
             if info.get(kind)}
    if wrong:
        raise ValueError(f"{path}: does not match {cls.__name__}: {wrong}")
    return model
