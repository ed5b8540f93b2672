"""Benchmarks of the proxy against distribution, on 127.0.0.1: `python bench/run.py`."""
