"""Benchmarks: `python -m bench.throughput` measures end-to-end delivery throughput."""
