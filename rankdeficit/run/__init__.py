"""A run directory's lifecycle: checkpoints and their integrity, the workdir
lock, preemption, storage (local or gs://), multi-host start-up and the run environment.

Nothing here imports `rankdeficit.training` or `.analysis`: they build on run/, not the
reverse (tests/test_style.py).
"""
