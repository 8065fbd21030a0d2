"""Test, benchmark and demo material: not the serving API.

- ``families``: generated model families (``text_classifier_family``).
- ``trained``: a trained family (``fine_tuned_family``: a numpy training loop).
- ``trained_families``: trained families of other recipes (``FAMILIES``; ``FIT_FAMILIES``,
  the ones dedup defaults may be fitted on, and ``HELD_OUT``), trained by ``nets``.
- ``bert_reference``: a BERT encoder in numpy, the reference for the engine's encoder.
- ``baselines``: low-rank and 1-bit (BitDelta) deltas outside the store, for comparison.
- ``workloads``: seeded buffer-pool traces (``family_trace``) and packing instances
  (``family_instance``).
- ``dedup_compare``: every dedup method side by side (``python -m sqlite_tensor.dedup``).
- ``demo``: ``python -m sqlite_tensor demo``.

Nothing here is imported by the library itself except on those commands.
"""
