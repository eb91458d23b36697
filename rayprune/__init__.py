"""rayprune: search for the best way to prune a pretrained transformer (Ray Tune + Optuna + MLflow)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
