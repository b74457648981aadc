"""Fixtures of the experiment-driver tests.

The figure drivers read the runs of `TrainedBy` settings from `experiments/results/<folder>`
(`experiments.figures.runs.RESULTS`). Tests write fake runs and records for every setting,
so here that root is a temporary folder for the whole session: no test can read, or
overwrite, the repository's results or the run directories they link to.
"""

import pytest

from experiments.figures import runs as runs_lib


@pytest.fixture(scope='session', autouse=True)
def isolated_results(tmp_path_factory):
  real = runs_lib.RESULTS
  runs_lib.RESULTS = str(tmp_path_factory.mktemp('results'))
  yield runs_lib.RESULTS
  runs_lib.RESULTS = real
