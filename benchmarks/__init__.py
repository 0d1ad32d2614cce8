"""Benchmarks for viggle-async: ``python -m benchmarks [--quick]`` (see README.md here)."""
