"""The method contract (``test_contract.py``) once more, with the forwards and losses under CPU
bfloat16 autocast, as the trial loop runs them with ``training.precision: bf16`` (the GPU
default), so the mixed-precision path is tested without a GPU.

Every contract check of ``test_contract.py`` runs unchanged; only its training helper is
replaced by one that wraps the forward passes and the loss hooks in ``torch.autocast`` (the
backward, the hooks that read gradients and the masking run outside, as in
``rayprune.training.loop``).  On top: the forward really ran in bfloat16, and the weights and
every statistic a method keeps stay float32.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import test_contract
from test_contract import METHODS, TOTAL_STEPS, Run


def _contract_cases():
    """Every check of ``test_contract.py`` that trains (takes ``make_tiny_bert``), with its own
    parametrization besides ``name`` (e.g. ``policy``), so new checks are picked up here too."""
    for attr, check in sorted(vars(test_contract).items()):
        if not attr.startswith("test_") or "make_tiny_bert" not in inspect.signature(check).parameters:
            continue
        combos = [{}]
        for mark in getattr(check, "pytestmark", []):
            if mark.name != "parametrize" or mark.args[0] == "name":
                continue
            argnames = [a.strip() for a in mark.args[0].split(",")]
            combos = [
                {**combo, **dict(zip(argnames, values if len(argnames) > 1 else (values,)))}
                for combo in combos for values in mark.args[1]
            ]
        for combo in combos:
            suffix = "".join(f"-{v}" for v in combo.values())
            yield pytest.param(check, combo, id=attr.removeprefix("test_") + suffix)


CONTRACT_CASES = list(_contract_cases())


_plain_train = test_contract._train  # kept before the fixture below replaces it


def _train_under_autocast(run: Run, batch: dict[str, torch.Tensor], steps: int = TOTAL_STEPS) -> None:
    """``test_contract._train`` with the loop's autocast scope around the forwards and loss hooks
    (the backward and the method's hooks run outside); records the logits' dtype."""
    run.logit_dtypes = []

    def forward(run, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs, loss, extra = test_contract._forward(run, batch)
        run.logit_dtypes.append(outputs.logits.dtype)
        return outputs, loss, extra

    _plain_train(run, batch, steps, forward=forward)


@pytest.fixture
def autocast_training(monkeypatch):
    monkeypatch.setattr(test_contract, "_train", _train_under_autocast)


@pytest.mark.parametrize("check, params", CONTRACT_CASES)
@pytest.mark.parametrize("name", METHODS)
def test_contract_holds_under_bf16_autocast(check, params, name, request, autocast_training):
    arguments = {"name": name, **params}
    for arg in inspect.signature(check).parameters:
        if arg not in arguments:
            arguments[arg] = request.getfixturevalue(arg)
    check(**arguments)


def _floating_tensors(value, path="state"):
    """(path, tensor) for every floating-point tensor in a nested state dict."""
    if torch.is_tensor(value):
        if value.is_floating_point():
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floating_tensors(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floating_tensors(item, f"{path}[{i}]")


@pytest.mark.parametrize("name", METHODS)
def test_weights_and_statistics_stay_float32_under_autocast(name, make_tiny_bert, tiny_batch, autocast_training):
    run = test_contract._trained(name, make_tiny_bert, tiny_batch)
    assert set(run.logit_dtypes) == {torch.bfloat16}, "the forward did not run under bf16 autocast"
    for fqn, param in run.model.named_parameters():
        assert param.dtype == torch.float32, f"{name}: weight {fqn} became {param.dtype}"
        assert torch.isfinite(param).all(), f"{name}: weight {fqn} is not finite"
    for fqn, mask in run.method.masks.items():
        assert mask.dtype == torch.bool, fqn
    statistics = list(_floating_tensors(run.method.state_dict()))
    for path, tensor in statistics:
        assert tensor.dtype == torch.float32, f"{name}: {path} is {tensor.dtype}, not float32"
        assert torch.isfinite(tensor).all(), f"{name}: {path} is not finite"
