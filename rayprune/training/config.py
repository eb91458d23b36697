"""A trial's configuration: what every trial of a search shares (:class:`TrialSettings`) and
what Optuna chose for this one (:class:`TrialConfig`), plus the method and schedule built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from rayprune.config import TrainingSection, split_key
from rayprune.methods import PruningMethod, SparsitySchedule, get_method

__all__ = ["TrialSettings", "TrialConfig", "eval_steps", "build_method"]


@dataclass
class TrialSettings:
    """What every trial of a search shares (not searched): model, budget, objective metric.

    The defaults are those of :class:`~rayprune.config.TrainingSection` (the YAML ``training``
    section); a search builds its settings with :meth:`from_section`.

    Attributes:
        model: model id/path/bundled name.
        trust_remote_code: the space file's ``trust_remote_code``; every load of ``model`` (and
            of a given reference model) passes it to transformers.
        metric: the objective metric (a key of the task's metrics).
        steps: optimizer steps per trial (from ``training.steps`` or epochs).
        batch_size / eval_batch_size / eval_interval: as in the YAML ``training`` section.
        learning_rate / weight_decay / warmup_ratio / max_grad_norm / seed: defaults that the
            space may override per trial.
        teacher_dir: the dense reference model, the teacher of methods with ``needs_teacher`` and
            of ``distill.*`` (:mod:`rayprune.training.reference`).
        reference_metric: the dense reference's ``metric`` on the eval split; every evaluation
            then reports ``retained`` (metric / reference metric).  None: no reference.
        constraints: the search's ``objective.constraints``; a trial measures what they name
            (``parameters``, ``latency_ms``) at its last evaluation.
        threads: torch intra-op threads in the trial (default: the trial's CPU count).
        checkpoint_budget: the largest share of the trial's time intermediate checkpoints may
            take (``training.checkpoint_budget``, :class:`~rayprune.training.checkpoint.CheckpointBudget`);
            the final evaluation always checkpoints.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (``training.precision``).
        compile: ``torch.compile`` the model (``training.compile``).
    """

    model: str
    metric: str
    steps: int
    trust_remote_code: bool = False
    batch_size: int = TrainingSection.batch_size
    eval_batch_size: int = TrainingSection.eval_batch_size
    eval_interval: int = TrainingSection.eval_interval
    learning_rate: float = TrainingSection.learning_rate
    weight_decay: float = TrainingSection.weight_decay
    warmup_ratio: float = TrainingSection.warmup_ratio
    max_grad_norm: float | None = TrainingSection.max_grad_norm
    seed: int = TrainingSection.seed
    teacher_dir: str | None = None
    threads: int | None = None
    checkpoint_budget: float = TrainingSection.checkpoint_budget
    reference_metric: float | None = None
    constraints: dict = field(default_factory=dict)
    precision: str = TrainingSection.precision
    compile: bool = TrainingSection.compile

    @classmethod
    def from_section(cls, training: TrainingSection, *, model: str, metric: str, steps: int,
                     threads: int | None, trust_remote_code: bool = False) -> "TrialSettings":
        """The settings of a search's trials from its ``training`` section (``steps`` resolved
        from ``training.epochs`` when that is what the file gives)."""
        return cls(
            model=model, metric=metric, steps=steps, trust_remote_code=trust_remote_code,
            batch_size=training.batch_size,
            eval_batch_size=training.eval_batch_size, eval_interval=min(training.eval_interval, steps),
            learning_rate=training.learning_rate, weight_decay=training.weight_decay,
            warmup_ratio=training.warmup_ratio, max_grad_norm=training.max_grad_norm, seed=training.seed,
            threads=threads, precision=training.precision, compile=training.compile,
            checkpoint_budget=training.checkpoint_budget,
        )

    @property
    def num_evals(self) -> int:
        """Reports per full trial: every ``eval_interval`` steps and at the last step."""
        return len(eval_steps(self.steps, self.eval_interval))


def eval_steps(total: int, interval: int) -> list[int]:
    """1-based step counts after which the trial evaluates."""
    steps = list(range(interval, total + 1, interval))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps


@dataclass
class TrialConfig:
    """One trial's searched configuration, parsed from Tune's flat config dict.

    ``method`` None means dense fine-tuning (the teacher, the dense reference)."""

    method: str | None
    target_sparsity: float
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    batch_size: int
    seed: int
    schedule: dict
    method_options: dict
    flat: dict = field(default_factory=dict)
    distill: dict = field(default_factory=dict)

    @classmethod
    def from_flat(cls, config: Mapping[str, Any], settings: TrialSettings) -> "TrialConfig":
        method = config.get("method")
        schedule, options, distill = {}, {}, {}
        for key, value in config.items():
            scope, name = split_key(key)
            if scope is None:
                continue
            if scope == "schedule":
                schedule[name] = value
            elif scope == "distill":
                distill[name] = value
            elif scope == method:
                options[name] = value
            else:
                raise ValueError(f"config key {key!r} does not belong to method {method!r}")
        return cls(
            method=method,
            target_sparsity=float(config.get("target_sparsity", 0.0)),
            learning_rate=float(config.get("learning_rate", settings.learning_rate)),
            weight_decay=float(config.get("weight_decay", settings.weight_decay)),
            warmup_ratio=float(config.get("warmup_ratio", settings.warmup_ratio)),
            batch_size=int(config.get("batch_size", settings.batch_size)),
            seed=int(config.get("seed", settings.seed)),
            schedule=schedule,
            method_options=options,
            flat=dict(config),
            distill=distill,
        )


def build_method(config: TrialConfig) -> tuple[PruningMethod | None, SparsitySchedule | None]:
    """Instantiate the configured method and its schedule (method defaults < config)."""
    if config.method is None:
        return None, None
    cls = get_method(config.method)
    method = cls(**config.method_options)
    schedule = SparsitySchedule(
        final_sparsity=config.target_sparsity,
        **{**dict(cls.schedule_defaults), **config.schedule},
    )
    return method, schedule
