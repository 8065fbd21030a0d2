"""Approximate deduplication: merge nearly identical blocks within an accuracy budget.

    from sqlite_tensor.dedup import accuracy
    report = store.dedup(validator=accuracy(x_val, y_val), max_drop=0.01)
    print(report)

See :meth:`sqlite_tensor.Store.dedup` and docs/dedup.md. The parts: candidate search
(lsh.py; baselines minhash.py and exhaustive.py), the order (importance.py), what to store
per block (encoding.py), validators (validators.py), and the guarded run (run.py).
"""

from .lsh import LSHOptions
from .minhash import MinHashOptions
from .report import DedupReport, ModelReport
from .validators import ValidatorError, accuracy

__all__ = [
    "accuracy",
    "DedupReport",
    "ModelReport",
    "ValidatorError",
    "LSHOptions",
    "MinHashOptions",
]
