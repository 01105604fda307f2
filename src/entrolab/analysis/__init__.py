"""Analysis of entropy in RL runs (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).

- :mod:`.law` — the entropy–performance law R = −a·exp(H) + b: exact least-squares fit with standard errors, the
  ceiling −a + b, the paper's forecast from the first 15 % of points, and the fit from a run directory.
- :mod:`.dynamics_check` — one real policy-gradient update on a Hugging Face LM (a task's prompts, its verifier's
  rewards, group advantages, one AdamW or SGD step); per-state Lemma-1 prediction −Cov_π(log π, Δz) against the exact
  entropy change.
- :mod:`.report` — PNG figures and a self-contained ``report.html`` per run; ``compare.html`` across runs.
- :mod:`.run` — reading a run directory (``metrics.jsonl``, ``samples.jsonl``, ``config.yaml``).
- :mod:`.cli` — ``entrolab analyze`` and ``entrolab compare``.

matplotlib and transformers are imported only by the modules that need them (``report``, ``dynamics_check``), and
those are loaded on first use of their names here.
"""

from .law import Forecast, LawFit, RunLaw, fit_law, forecast, law_from_run
from .run import Run, RunDirError, load_run
from .stats import pearson, spearman

_LAZY = {
    "analyze_run": "report", "compare_runs": "report", "Report": "report", "write_dynamics_check": "report",
    "cov_positive": "report", "sample_tokens_figure": "report",
    "verify_dynamics": "dynamics_check", "verify_dynamics_on_task": "dynamics_check",
    "DynamicsReport": "dynamics_check",
}

__all__ = ["LawFit", "Forecast", "RunLaw", "fit_law", "forecast", "law_from_run", "Run", "RunDirError", "load_run",
           "pearson", "spearman", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
