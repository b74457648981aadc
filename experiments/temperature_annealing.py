"""Temperature annealing, 100 -> 1 (issue 12.3): OOD detection of high T, generalization of T=1?

    python -m experiments.temperature_annealing [--seeds=3]
        [--outdir=experiments/results/beyond_cpu] [--render_only] [--runs_dir=DIR]
        [--data_dir=data/tfds] [--settings=anneal_mlp,anneal_resnet20] [--smoke --outdir=DIR]

Trains (or resumes; finished runs are skipped) an MLP and a ResNet-20 on CIFAR-10 with
constant T = 1, constant T = 100, and T annealed 100 -> 1 (cosine over training; one step at
half of training), analyses every run, and writes `temperature_annealing.png/.md/.csv` from
the run directories (`<outdir>/runs/anneal_*/`): accuracy, kappa, rho, SR, NECO AUROC and
FPR@95. Grid and renderer: experiments/figures/beyond_annealing.py.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import logging

from experiments.figures import beyond_annealing
from experiments.figures import grid


def main(argv: Sequence[str] | None = None) -> grid.Loaded:
  return grid.main(beyond_annealing.EXPERIMENT, __doc__.splitlines()[0], argv)


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  main(sys.argv[1:])
