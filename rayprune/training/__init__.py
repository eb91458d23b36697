"""Training one trial: its config, the loop, evaluation, checkpoints, the teacher and the Ray
trainable (:mod:`rayprune.training.trainable`, the only module here importing Ray, not
re-exported)."""

from rayprune.training.checkpoint import load_trained
from rayprune.training.config import TrialConfig, TrialSettings, build_method, eval_steps
from rayprune.training.evaluation import evaluate, predict
from rayprune.training.loop import load_teacher, run_training

__all__ = ["TrialConfig", "TrialSettings", "build_method", "eval_steps", "evaluate", "predict",
           "run_training", "load_teacher", "load_trained"]
