"""Benchmarks: `make bench` (or `python -m bench [part ...]`); figures land in docs/benchmarks.md."""
