"""Evaluation and benchmark toolkit behind `rerank-prod eval` / `rerank-prod bench`.

Kept out of `rerank_prod`'s import path: the IR metrics, BM25, plotting and framework libraries
it uses load only when a command runs (`pip install 'rerank-prod[eval]'`).
"""

from rerank_prod.evaluation.configs import register_cache_backend, register_scorer
from rerank_prod.evaluation.dataset import BeirDataset, EvalInputError, load_beir
from rerank_prod.evaluation.experiment import EvalOptions, run_eval

__all__ = [
    "BeirDataset",
    "EvalInputError",
    "EvalOptions",
    "load_beir",
    "register_cache_backend",
    "register_scorer",
    "run_eval",
]
