"""Benchmarks: `python -m benchmarks.<name> --help` lists each one's options."""
