"""rayprune: search for the best way to prune a pretrained transformer (Ray Tune + Optuna + MLflow).

Importing the package registers rayprune's physically pruned model classes with the
transformers Auto classes, so a structured export (GRAIN) loads with
``AutoModelForSequenceClassification.from_pretrained(path)`` after ``import rayprune``.
"""

from rayprune import structured as _structured  # noqa: F401  (Auto-class registration)

__version__ = "0.1.0"

__all__ = ["__version__"]
