"""Sweep definitions for `python -m rankdeficit.sweep` (see rankdeficit/sweep.py)."""
