"""rankdeficit: softmax temperature, representation collapse and generalisation in JAX/Flax.

A reimplementation of "Unpacking Softmax: How Temperature Drives Representation Collapse,
Compression and Generalization" (Masarczyk et al.). Subpackages are imported explicitly,
e.g. `from rankdeficit import metrics` or `from rankdeficit.models import create_model`.
"""
