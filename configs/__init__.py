"""Experiment configs (ml_collections).

Each file's `get_config()` returns a locked-ready ConfigDict.
"""
