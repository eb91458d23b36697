"""The sections of a search-space file as typed dataclasses; their defaults are THE defaults.

Each YAML section is one dataclass here (``data`` is :class:`rayprune.data.spec.DataSpec`).  The
trial settings (:class:`rayprune.training.config.TrialSettings`), the dense reference and the
CLI read their defaults from these classes and nowhere else.  Bounds and help text live in the
field metadata (:mod:`rayprune.config.fields`) and feed the checks below, the JSON Schema and
``rayprune methods``.

Every class checks its fields in ``__post_init__``, so a section built in Python is validated
the same way as one read from YAML.  This module imports neither torch nor ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from rayprune.config.fields import check_value, type_hints

__all__ = [
    "TrainingSection",
    "BudgetSection",
    "ResourcesSection",
    "SchedulerSection",
    "SearchSection",
    "ReferenceSection",
    "ConstraintsSection",
    "ObjectiveSection",
    "FailureSection",
    "DistillOptions",
    "SparsityTarget",
    "SCHEDULER_KINDS",
    "SEARCH_ALGORITHMS",
    "PRECISIONS",
    "SEARCHABLE_TRAINING_KEYS",
]

SCHEDULER_KINDS = ("asha", "mo_asha", "fifo")
SEARCH_ALGORITHMS = ("tpe", "nsga2", "random")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Seeds go to numpy and Optuna, which take unsigned 32-bit seeds.
_SEED_MAX = 2**32 - 1


def _knob(default: Any, help: str, **bounds: Any) -> Any:
    """A field whose help text and bounds live in its metadata (see :mod:`rayprune.config.fields`)."""
    return field(default=default, metadata={"help": help, **bounds})


class _Checked:
    """Mixin: ``__post_init__`` checks every field against its hint and metadata bounds and
    stores the converted value (ints given for floats become floats)."""

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            hint = hints[f.name]
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(hint):
                if not isinstance(value, hint):
                    raise TypeError(f"{f.name}: expected a {hint.__name__}, got {type(value).__name__}")
                continue
            try:
                object.__setattr__(self, f.name, check_value(value, hint, f.metadata))
            except (TypeError, ValueError) as err:
                raise type(err)(f"{f.name}: {err}") from None


@dataclass(frozen=True, kw_only=True)
class TrainingSection(_Checked):
    """``training:`` what every trial of the search shares; the space may override the knobs in
    :data:`SEARCHABLE_TRAINING_KEYS` per trial.  One of ``steps`` / ``epochs`` is required."""

    steps: int | None = _knob(None, "optimizer steps per trial (or set epochs)", minimum=1, maximum=10**9)
    epochs: float | None = _knob(None, "passes over the training split per trial (or set steps)",
                                 exclusive_minimum=0.0, maximum=10_000.0)
    batch_size: int = _knob(32, "training examples per optimizer step", minimum=1, maximum=65_536)
    eval_interval: int = _knob(50, "evaluate (and report to the scheduler) every N steps", minimum=1)
    eval_batch_size: int = _knob(128, "examples per evaluation forward", minimum=1, maximum=65_536)
    learning_rate: float = _knob(5e-5, "AdamW learning rate (peak, after warm-up)",
                                 exclusive_minimum=0.0, maximum=1.0)
    weight_decay: float = _knob(0.0, "AdamW weight decay", minimum=0.0, maximum=1.0)
    warmup_ratio: float = _knob(0.1, "fraction of the steps spent in linear warm-up", minimum=0.0, maximum=1.0)
    max_grad_norm: float | None = _knob(1.0, "clip the task gradient to this norm (0 or null: off)", minimum=0.0)
    seed: int = _knob(0, "seed of the model head, batches and dropout", minimum=0, maximum=_SEED_MAX)
    checkpoint_keep: int = _knob(2, "checkpoints kept per trial", minimum=1, maximum=1000)
    checkpoint_budget: float = _knob(
        0.05, "largest share of a trial's time its intermediate checkpoints may take (0: only the "
              "final one, 1: one at every evaluation)", minimum=0.0, maximum=1.0)
    threads_per_trial: int | None = _knob(None, "torch threads per trial (default: the trial's CPUs)",
                                          minimum=1, maximum=1024)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _knob(
        "auto", "auto: bf16 autocast where supported, else fp16 with a scaler on CUDA, else fp32")
    compile: bool = _knob(False, "torch.compile the model in each trial")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is None and self.epochs is None:
            raise ValueError("set training.steps or training.epochs")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set training.steps or training.epochs, not both")


#: Training knobs the space may search (``space.learning_rate`` ...), checked by the training
#: section's bounds.
SEARCHABLE_TRAINING_KEYS = ("learning_rate", "weight_decay", "warmup_ratio", "batch_size", "seed")


@dataclass(frozen=True, kw_only=True)
class SparsityTarget(_Checked):
    """``space.target_sparsity``: the sparsity each trial reaches at the end of its ramp."""

    target_sparsity: float = _knob(0.5, "fraction of the prunable weights set to zero",
                                   minimum=0.0, exclusive_maximum=1.0)


@dataclass(frozen=True, kw_only=True)
class DistillOptions(_Checked):
    """``space.distill.*``: a soft-target loss from the dense reference's logits, for any method
    that keeps the default task loss.  ``alpha`` 0 (the default) is off."""

    alpha: float = _knob(0.0, "weight of the distillation loss: (1 - alpha) task + alpha KD",
                         minimum=0.0, maximum=1.0)
    temperature: float = _knob(2.0, "softmax temperature of the distillation loss",
                               exclusive_minimum=0.0, maximum=100.0)


@dataclass(frozen=True, kw_only=True)
class BudgetSection(_Checked):
    """``budget:`` how many trials, how many at once."""

    num_samples: int = _knob(8, "trials in the search", minimum=1, maximum=100_000)
    max_concurrent: int = _knob(2, "trials running at the same time", minimum=1, maximum=10_000)


@dataclass(frozen=True, kw_only=True)
class ResourcesSection(_Checked):
    """``resources:`` what each trial reserves on the Ray cluster."""

    cpu: float = _knob(1.0, "CPUs per trial", exclusive_minimum=0.0, maximum=1024.0)
    gpu: float = _knob(0.0, "GPUs per trial: a fraction up to 1 shares a GPU, above 1 whole GPUs only",
                       minimum=0.0, maximum=64.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Ray takes fractions up to 1 only ("Resource quantities >1 must be whole numbers"), and
        # says so when it submits the trial's actor, after the dense reference has trained.
        if self.gpu > 1 and not self.gpu.is_integer():
            raise ValueError(f"gpu: {self.gpu:g} is not allowed: a fraction up to 1 (trials share a GPU) "
                             f"or a whole number of GPUs up to 64 (Ray gives a trial more than one GPU "
                             f"only whole); use {int(self.gpu)} or {int(self.gpu) + 1}")


@dataclass(frozen=True, kw_only=True)
class SchedulerSection(_Checked):
    """``scheduler:`` the Tune scheduler that stops trials early (rungs count evaluations).

    The default is MO-ASHA because the replayed comparison (benchmarks/bench_search.py, 10
    seeds) put it ahead of scalar ASHA on the metric, which stops high-sparsity trials at the
    first rungs; RESULTS.md has the numbers."""

    kind: Literal["asha", "mo_asha", "fifo"] = _knob("mo_asha", "mo_asha (multi-objective; the default, see benchmarks/RESULTS.md), asha (scalar, on the metric) or fifo")
    grace_period: int = _knob(2, "evaluations before the first rung", minimum=1, maximum=100_000)
    reduction_factor: float = _knob(2.0, "keep 1/reduction_factor at each rung",
                                    exclusive_minimum=1.0, maximum=1000.0)


@dataclass(frozen=True, kw_only=True)
class SearchSection(_Checked):
    """``search:`` the Optuna sampler.

    TPE is the default: with MO-ASHA at grace 2 and no configuration trained twice
    (``skip_duplicates``), it reached 95% of the recorded tables' hypervolume with the fewest
    trial-steps of every sampler on both tables (a median of 0.17 and 0.23 of the table, against
    0.33 and 0.27 for NSGA-II, 0.30 and 0.32 for random + FIFO; benchmarks/RESULTS.md).
    NSGA-II's first generation (``population_size``, 50 trials) is random sampling, so below 50
    full-budget trials it behaves like ``random``, which measured the same."""

    algorithm: Literal["tpe", "nsga2", "random"] = _knob("tpe", "Optuna sampler (tpe the default, see benchmarks/RESULTS.md)")
    seed: int = _knob(0, "sampler seed", minimum=0, maximum=_SEED_MAX)
    population_size: int | None = _knob(
        None, "nsga2 only: trials per generation (Optuna's default 50); a generation ends when this "
              "many of its trials ran their full budget, so with ASHA stopping most trials a small "
              "search never leaves the random first generation", minimum=2, maximum=10**6)
    skip_duplicates: bool = _knob(
        True, "never train a configuration twice: a proposal that repeats one already tried is given "
              "that trial's result instead, and a finite space ends when every configuration was tried "
              "(false: repeats run again, e.g. to see the noise of a non-deterministic setup)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.population_size is not None and self.algorithm != "nsga2":
            raise ValueError(f"population_size: applies to algorithm nsga2 only, got algorithm={self.algorithm!r}; "
                             f"remove it or set algorithm: nsga2")

    def sampler_options(self) -> dict:
        """Keyword arguments for the Optuna sampler beyond ``seed`` (only those the YAML set)."""
        return {} if self.population_size is None else {"population_size": self.population_size}


@dataclass(frozen=True, kw_only=True)
class ReferenceSection(_Checked):
    """``reference:`` (alias ``teacher:``) the dense reference: one dense fine-tune per search, the
    teacher of distilling trials.  Its budget defaults to the trials' (``training.steps`` and
    ``training.learning_rate``); ``model`` is a dense model to evaluate instead of training one.
    A reference that is not clearly above the floor stops the search before its first trial
    unless ``require_above_floor`` is false.  ``reference: none`` opts out (the spec's
    ``reference`` is then None)."""

    model: str | None = _knob(None, "a dense fine-tuned model (path or hub id) used instead of training one")
    steps: int | None = _knob(None, "optimizer steps of the reference (default: the trials')",
                              minimum=1, maximum=10**9)
    learning_rate: float | None = _knob(None, "learning rate of the reference (default: training.learning_rate)",
                                        exclusive_minimum=0.0, maximum=1.0)
    require_above_floor: bool = _knob(
        True, "stop before any trial when the reference is not clearly above the floor (the best constant "
              "predictor): no trial of such a budget can be judged; false runs the search anyway")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model is not None and not self.model.strip():
            raise ValueError("model: empty; give a path or hub id, or leave it out to train the reference")

    def budget(self, trial_steps: int, trial_learning_rate: float) -> tuple[int, float]:
        """The resolved ``(steps, learning_rate)`` a trained reference uses: its own where given,
        else the trials'."""
        return (self.steps if self.steps is not None else trial_steps,
                self.learning_rate if self.learning_rate is not None else trial_learning_rate)


@dataclass(frozen=True, kw_only=True)
class ConstraintsSection(_Checked):
    """``objective.constraints:`` limits a front member must meet (null: no limit)."""

    min_retained: float | None = _knob(None, "metric / reference metric at least this",
                                       exclusive_minimum=0.0, maximum=10.0)
    max_parameters: int | None = _knob(None, "non-zero (structured: stored) parameters at most this",
                                       minimum=1)
    max_latency_ms: float | None = _knob(None, "latency of a fixed batch at most this (milliseconds)",
                                         exclusive_minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class ObjectiveSection(_Checked):
    """``objective:`` the task metric to maximise (with sparsity) and the floors of a usable trial."""

    metric: str | None = _knob(None, "a metric of the task (default: the task's primary metric)")
    min_metric: float | None = _knob(None, "a finished trial below this metric is collapsed")
    min_retained: float | None = _knob(None, "a finished trial below this fraction of the reference is collapsed",
                                       exclusive_minimum=0.0, maximum=10.0)
    constraints: ConstraintsSection = field(default_factory=ConstraintsSection,
                                            metadata={"help": "limits a front member must meet"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from rayprune.metrics import METRICS, TASK_PROPORTION_METRICS

        # Any task's metric passes here; the preflight checks it against the loaded task's metrics.
        allowed = sorted(set(METRICS) | set(TASK_PROPORTION_METRICS))
        if self.metric is not None and self.metric not in allowed:
            raise ValueError(f"metric: unknown metric {self.metric!r}; allowed: {allowed}")


@dataclass(frozen=True, kw_only=True)
class FailureSection(_Checked):
    """``failure:`` what happens when a trial's node dies."""

    max_retries: int = _knob(3, "retries of a trial whose node died, from its last checkpoint",
                             minimum=0, maximum=100)
