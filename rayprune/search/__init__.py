"""The search side: preflight, driver (Tuner + OptunaSearch + schedulers), searcher, MO-ASHA,
the results store and plots.

Import the submodule you need: :mod:`rayprune.search.results` (what ``rayprune pareto`` and
``export`` read) imports neither Ray nor Optuna nor torch; :mod:`rayprune.search.driver` does.
"""
