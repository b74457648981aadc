"""A run directory's lifecycle: validation, checkpoints and their integrity, the workdir
lock, preemption, storage (local or gs://), multi-host start-up and the run environment.

Nothing here imports `rankdeficit.training`: training builds on these, not the reverse.
"""
