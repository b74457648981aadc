"""The initial logits norm as the knob (issue 12.2; paper App. E, Fig. 17).

    python -m experiments.logits_norm_knob [--seeds=3] [--outdir=experiments/results/beyond_cpu]
        [--render_only] [--runs_dir=DIR] [--data_dir=data/tfds] [--smoke --outdir=DIR]

Trains (or resumes; finished runs are skipped) an MLP on CIFAR-10 under four inits at
T in {1, 10, 100} and calibrated to one effective initial norm through
`config.target_logits_norm`, analyses every run, and writes `logits_norm_knob.png/.md/.csv`
from the run directories (`<outdir>/runs/knob_mlp/`): kappa, rho, SR, effective rank of the
last hidden layer and accuracy against n0 / T. Grid and renderer:
experiments/figures/beyond_knob.py.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import logging

from experiments.figures import beyond_knob
from experiments.figures import grid


def main(argv: Sequence[str] | None = None) -> grid.Loaded:
  return grid.main(beyond_knob.EXPERIMENT, __doc__.splitlines()[0], argv)


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  main(sys.argv[1:])
