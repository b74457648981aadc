"""Smoke runs of the synthetic/theory experiments at tiny sizes, plus their key claims."""

import os

import numpy as np

from experiments import prop31_bound
from experiments import prop_k1
from experiments import rank1_column_softmax
from experiments import synthetic_softmax_rank


def test_figure6_rank_of_m_fixed_and_softmax_raises_rank(tmp_path):
  mean_ranks, pre_ranks = synthetic_softmax_rank.main(['--quick', '--outdir', str(tmp_path)])
  for k, ranks in pre_ranks.items():
    assert ranks == [k]
    assert mean_ranks[k].max() > k  # softmax lifts the rank above rank(M)
  assert (tmp_path / 'synthetic_softmax_rank.png').exists()
  assert (tmp_path / 'synthetic_softmax_rank.md').exists()


def test_figure21_column_softmax(tmp_path):
  temperatures, gap, ranks = rank1_column_softmax.main(['--quick', '--outdir', str(tmp_path)])
  assert ranks.max() > 1 and np.all(gap >= -1e-6)
  assert os.path.exists(tmp_path / 'rank1_column_softmax.png')


def test_prop31_bound_never_violated(tmp_path):
  worst = prop31_bound.main(['--quick', '--outdir', str(tmp_path)])
  assert worst <= 1e-12
  assert (tmp_path / 'prop31_bound.csv').exists()


def test_prop_k1_rank2_reaches_full_rank(tmp_path):
  rows = prop_k1.main(['--quick', '--outdir', str(tmp_path)])
  for n, pre, max_post, reached, _ in rows:
    assert pre == [2] and max_post == n and reached >= 1
