"""Benchmarks of simcompress (not tests: CI does not run them). Run with ``python -m bench``."""
