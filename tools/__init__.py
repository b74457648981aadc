"""Command-line tools: data import, benchmarks."""
