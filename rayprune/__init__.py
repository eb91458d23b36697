"""rayprune: search for the best way to prune a pretrained transformer (Ray Tune + Optuna + MLflow).

Importing the package imports neither torch nor ray (``rayprune --help`` stays fast).  The
physically pruned model classes of structured exports are registered with the transformers Auto
classes where models are loaded (:func:`rayprune.models.load_model_and_tokenizer`) or exported;
to load a structured export with ``AutoModelForSequenceClassification.from_pretrained(path)``
elsewhere, call :func:`rayprune.models.register_pruned_models` first.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
