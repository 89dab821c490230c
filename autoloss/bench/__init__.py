"""Benchmark bookkeeping shared by scripts/benchmark_*.py and their tests."""
