"""Approximate deduplication: merge nearly identical blocks within an accuracy budget.

    from sqlite_tensor.dedup import accuracy
    report = store.dedup(validator=accuracy(x_val, y_val), max_drop=0.01)
    print(report)

See :meth:`sqlite_tensor.Store.dedup` and docs/dedup.md. The parts: candidate search
(lsh.py; baselines minhash.py and exhaustive.py), the ways to store each block and what
they cost (encoding.py), validators (validators.py), the run (run.py) with its two
strategies: the budget search (budget.py, the default) and the paper's greedy guard in
steps, least important blocks first (importance.py).
"""

from .lsh import LSHOptions
from .minhash import MinHashOptions
from .report import DedupReport, ModelReport
from .validators import ValidatorError, accuracy, embedding_agreement, retrieval_accuracy

__all__ = [
    "accuracy",
    "embedding_agreement",
    "retrieval_accuracy",
    "DedupReport",
    "ModelReport",
    "ValidatorError",
    "LSHOptions",
    "MinHashOptions",
]
