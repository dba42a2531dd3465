"""Benchmarks: the project beside the Node.js reference (``python -m bench``)."""
