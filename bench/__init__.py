"""Benchmarks: `python -m bench.ingest`, `python -m bench.generation`."""
