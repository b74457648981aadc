"""OOD metrics against scikit-learn (tests only) and hand-computed cases; NECO."""

import jax
import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve

from rankdeficit import metrics

RNG = np.random.default_rng(3)


def _sk(id_s, ood_s):
  y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
  s = np.r_[id_s, ood_s].astype(np.float64)
  fpr, tpr, _ = roc_curve(1 - y, -s)
  return {
    'auroc': roc_auc_score(y, s),
    'aupr_in': average_precision_score(y, s),
    'aupr_out': average_precision_score(1 - y, -s),
    'fpr_openood': fpr[np.argmax(tpr >= 0.95)],
  }


@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('sizes', [(100, 60), (37, 211), (5, 3)])
def test_against_sklearn(ties, sizes):
  n_id, n_ood = sizes
  if ties:
    id_s = RNG.integers(0, 6, n_id).astype(np.float32)
    ood_s = RNG.integers(-2, 4, n_ood).astype(np.float32)
  else:
    id_s = RNG.normal(1.0, 1.0, n_id).astype(np.float32)
    ood_s = RNG.normal(0.0, 1.0, n_ood).astype(np.float32)
  ref = _sk(id_s, ood_s)
  assert float(metrics.auroc(id_s, ood_s)) == pytest.approx(ref['auroc'], abs=1e-6)
  assert float(metrics.aupr_in(id_s, ood_s)) == pytest.approx(ref['aupr_in'], abs=1e-6)
  assert float(metrics.aupr_out(id_s, ood_s)) == pytest.approx(ref['aupr_out'], abs=1e-6)
  got = float(metrics.fpr_at_95_tpr(id_s, ood_s, convention='openood'))
  assert got == pytest.approx(ref['fpr_openood'], abs=1e-6)


def test_hand_computed_cases():
  # perfect separation
  assert float(metrics.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0]))) == 1.0
  # everything tied: AUROC 1/2, AP = positive rate
  ones = np.ones(4, np.float32)
  assert float(metrics.auroc(ones, ones[:2])) == 0.5
  assert float(metrics.aupr_in(ones, ones[:2])) == pytest.approx(4 / 6)
  # ID {3, 1}, OOD {2, 1}: pairs (3>2) 1, (3>1) 1, (1<2) 0, (1=1) 1/2 -> 2.5/4
  assert float(metrics.auroc(np.array([3.0, 1.0]), np.array([2.0, 1.0]))) == pytest.approx(0.625)
  # AP(ID pos): thresholds 3 -> P=1 R=.5 ; 2 -> no new TP ; 1 -> P=2/4, R=1 -> .5*1 + .5*.5
  assert float(metrics.aupr_in(np.array([3.0, 1.0]), np.array([2.0, 1.0]))) == pytest.approx(0.75)


def test_fpr95_neco_convention():
  id_s = np.arange(1, 21, dtype=np.float32)  # 20 ID scores 1..20
  # keep floor(.95*20)=19 ID -> threshold = 2 (the 19th largest); OOD >= 2 accepted
  ood_s = np.array([0.0, 1.0, 2.0, 5.0, 30.0], np.float32)
  assert float(metrics.fpr_at_95_tpr(id_s, ood_s)) == pytest.approx(3 / 5)
  assert float(metrics.fpr_at_95_tpr(id_s, ood_s, convention='neco')) == pytest.approx(3 / 5)
  # reference implementation of ViM/NECO's fpr_recall
  for _ in range(5):
    a, b = RNG.normal(1, 1, 97), RNG.normal(0, 1, 55)
    thresh = np.sort(a)[-int(np.floor(0.95 * len(a)))]
    ref = np.sum(b >= thresh) / len(b)
    assert float(
      metrics.fpr_at_95_tpr(a.astype(np.float32), b.astype(np.float32))
    ) == pytest.approx(ref)
  with pytest.raises(ValueError):
    metrics.fpr_at_95_tpr(id_s, ood_s, convention='bogus')


def test_ood_metrics_jit_and_keys():
  a, b = RNG.normal(1, 1, 50).astype(np.float32), RNG.normal(0, 1, 40).astype(np.float32)
  out = jax.jit(metrics.ood_metrics)(a, b)
  assert set(out) == {'auroc', 'aupr_in', 'aupr_out', 'fpr95_neco'}
  assert 'fpr95_openood' in metrics.ood_metrics(a, b, fpr_convention='openood')


def test_neco_scores_in_subspace_points_higher():
  d, k = 20, 3
  basis, _ = np.linalg.qr(RNG.standard_normal((d, k)))
  train = (RNG.standard_normal((500, k)) * [5.0, 4.0, 3.0]) @ basis.T + 0.05 * RNG.standard_normal(
    (500, d)
  )
  params = metrics.neco_fit(train.astype(np.float32), dim=k)
  assert params.components.shape == (d, k)
  in_sub = (RNG.standard_normal((100, k)) * 4.0) @ basis.T + 0.05 * RNG.standard_normal((100, d))
  off_sub = RNG.standard_normal((100, d)) * 2.0
  s_in = np.asarray(metrics.neco_score(params, in_sub.astype(np.float32)))
  s_off = np.asarray(metrics.neco_score(params, off_sub.astype(np.float32)))
  assert np.all((s_in >= 0) & (s_in <= 1 + 1e-6))
  assert s_in.mean() > 0.9 and s_off.mean() < 0.6
  assert float(metrics.auroc(s_in, s_off)) > 0.99
  # sklearn-equivalent pipeline: StandardScaler + PCA
  from sklearn.decomposition import PCA
  from sklearn.preprocessing import StandardScaler

  scaler = StandardScaler().fit(train)
  pca = PCA(d).fit(scaler.transform(train))
  z = scaler.transform(in_sub)
  ref = np.linalg.norm(pca.transform(z)[:, :k], axis=1) / np.linalg.norm(z, axis=1)
  np.testing.assert_allclose(s_in, ref, atol=1e-4)
  logits = RNG.standard_normal((100, 4)).astype(np.float32)
  s_vit = np.asarray(metrics.neco_score(params, in_sub.astype(np.float32), logits))
  np.testing.assert_allclose(s_vit, s_in * logits.max(1), rtol=1e-5)
