"""Benchmarks; each module prints a small table (`python -m bench.<name>`)."""
