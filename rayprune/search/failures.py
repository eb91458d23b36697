"""Which failed trials Ray Tune retries: those whose node or worker died, not those that failed
by their own fault.

Ray 2.60's ``FailureConfig(max_failures=N)`` retries every failure alike: ``Trial.handle_error``
counts a ``RayTaskError`` (an exception raised in the trainable) the same as a
``RayActorError`` (the worker process or its node died), and ``TuneController`` then asks
``Trial.should_recover()`` whether failures so far are within ``max_failures``.  Ray offers no
hook between the two to say which errors are worth a retry, so :func:`install_retry_policy`
wraps those two ``Trial`` methods once in the driver process: an error that is the trial's own
fault (:func:`is_own_fault`: an exception in the method, a NaN guard, a bad option) is not
retried, because it would fail again the same way from the same checkpoint; anything else (node
died, worker killed, object lost with its node) keeps Ray's behaviour and is retried from the
last checkpoint up to ``failure.max_retries`` times.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

__all__ = ["is_own_fault", "install_retry_policy", "max_retries", "RetryReporter", "DEFAULT_MAX_RETRIES"]

DEFAULT_MAX_RETRIES = 3
_MARK = "_rayprune_retry_policy"


def is_own_fault(exc: BaseException | None) -> bool:
    """Whether a trial failure was raised by the trial's own code (so a retry fails the same way).

    A ``RayTaskError`` whose cause is an ordinary exception is the trainable's; a cause that is
    itself a ``RayError`` (a nested actor death, an object lost with its node), a
    ``RayActorError`` and anything else from Ray's machinery are not.
    """
    from ray.exceptions import RayError, RayTaskError

    if not isinstance(exc, RayTaskError):
        return False
    return not isinstance(exc.cause, RayError)


def install_retry_policy() -> None:
    """Make ``Trial.should_recover`` say no right after an own-fault error (idempotent).

    The verdict lives in the trial's ``temporary_state``, which Ray never saves, so a search
    resumed later starts from Ray's own accounting.
    """
    from ray.tune.experiment.trial import Trial

    if getattr(Trial, _MARK, False):
        return
    handle_error, should_recover = Trial.handle_error, Trial.should_recover

    def handle_error_with_verdict(self, exc=None):
        self.temporary_state.rayprune_own_fault = is_own_fault(exc)
        return handle_error(self, exc)

    def should_recover_unless_own_fault(self):
        if getattr(self.temporary_state, "rayprune_own_fault", False):
            return False
        return should_recover(self)

    handle_error_with_verdict.__doc__ = handle_error.__doc__
    should_recover_unless_own_fault.__doc__ = should_recover.__doc__
    Trial.handle_error = handle_error_with_verdict
    Trial.should_recover = should_recover_unless_own_fault
    setattr(Trial, _MARK, True)


def max_retries(spec: Any) -> int:
    """``failure.max_retries`` of a spec (a mapping or a typed section), default 3."""
    failure = getattr(spec, "failure", None)
    value = failure.get("max_retries") if isinstance(failure, dict) else getattr(failure, "max_retries", None)
    return DEFAULT_MAX_RETRIES if value is None else int(value)


class RetryReporter(Callback):
    """Ray Tune callback (driver side): one line per retried trial, saying why and from where."""

    def __init__(self, log=print) -> None:
        self.log = log
        #: trial id -> retries so far (read by tests and the summary).
        self.retries: dict[str, int] = {}

    def __getstate__(self) -> dict:
        return {"retries": self.retries}

    def __setstate__(self, state: dict) -> None:
        self.log = print
        self.retries = dict(state.get("retries", {}))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        step = (trial.last_result or {}).get("step")
        where = f"its checkpoint at step {step}" if trial.checkpoint is not None and step is not None else "the start"
        self.log(f"trial {trial.trial_id} lost its worker (node or process died); retry "
                 f"{trial.num_failures}/{trial.max_failures} from {where}")
