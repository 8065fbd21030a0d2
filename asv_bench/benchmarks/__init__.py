"""asv benchmarks of sqlite-tensor; see docs/benchmarks.md. Run with `make bench`."""
