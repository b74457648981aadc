"""metrics.tsqr: ranks and singular values of row-sharded matrices against the float64 SVD.

The reference is `np.linalg.svd` of the gathered real rows in float64, thresholded with
the rule the library documents for float32 input (`sigma_1 max(m, d) eps(float32)`, m =
real rows): the ranks must be equal and every singular value within 1e-5 sigma_1
(docs/metrics.md, "Streamed metrics"). Rows are sharded over 8 devices with padding rows
(row_mask False) in the middle of the matrix, as a 2-process analysis lays them out. Run
with XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rankdeficit import metrics
from rankdeficit.analysis import rows

EPS32 = float(np.finfo(np.float32).eps)
SIGMA_ATOL = 1e-5  # x sigma_1: the documented precision

pytestmark = pytest.mark.skipif(
  jax.device_count() < 8,
  reason='needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8',
)


@pytest.fixture(autouse=True, scope='module')
def _one_blas_thread():
  """8 CPU devices run their QRs at once: one BLAS thread each (analysis.rows)."""
  with rows.cpu_blas_threads():
    yield


def _mesh(devices: int = 8) -> Mesh:
  return Mesh(np.asarray(jax.devices()[:devices]), ('data',))


def _sharded(x: np.ndarray, mesh: Mesh) -> jax.Array:
  return jax.device_put(x, NamedSharding(mesh, P('data')))


def _with_padding(x: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
  """`x` with `pad` garbage rows in the middle, and the mask marking them False."""
  mid = len(x) // 2
  junk = np.full((pad, x.shape[1]), 7.0, np.float32)
  rows = np.concatenate([x[:mid], junk, x[mid:]]).astype(np.float32)
  mask = np.ones(len(rows), bool)
  mask[mid : mid + pad] = False
  return rows, mask


def _reference(x: np.ndarray) -> tuple[np.ndarray, int]:
  s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
  return s, int(np.sum(s > s[0] * max(x.shape) * EPS32))


def _check(x: np.ndarray, pad: int = 8, devices: int = 8) -> dict:
  rows, mask = _with_padding(x, pad)
  mesh = _mesh(devices)
  got = metrics.streamed_spectrum(_sharded(rows, mesh), _sharded(mask, mesh))
  s64, rank64 = _reference(x)
  assert int(got['numerical_rank']) == rank64 == int(metrics.numerical_rank(x))
  sigma = np.asarray(got['singular_values'], np.float64)
  assert np.all(sigma[len(s64) :] <= SIGMA_ATOL * s64[0])  # padding rows: zero values
  np.testing.assert_allclose(sigma[: len(s64)], s64, rtol=0, atol=SIGMA_ATOL * s64[0])
  erank = float(metrics.effective_rank(x))
  assert float(got['effective_rank']) == pytest.approx(erank, rel=1e-5)
  return got


@pytest.mark.parametrize(
  'm, d, k',
  [
    (800, 40, 17),  # tall: 101 rows per device, > d: each device reduces its block by QR
    (96, 300, 30),  # wide: 13 rows per device, < d: blocks are their own factors
    (4000, 256, 200),
    (64, 512, 64),  # full row rank, rows << columns
    (2048, 64, 64),  # full column rank
  ],
)
def test_rank_k_products_match_the_float64_svd(m, d, k):
  rng = np.random.default_rng(m + d + k)
  x = (rng.standard_normal((m, k)) @ rng.standard_normal((k, d))).astype(np.float32)
  got = _check(x)
  assert int(got['numerical_rank']) == min(k, m, d)


def test_simplex_etf_has_rank_c_minus_1():
  # Collapsed features: every row is its class's vertex of a centred simplex ETF in d
  # dimensions; the C vertices sum to 0, so the rank is C - 1.
  c, d, per_class = 10, 64, 80
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.standard_normal((d, c)))
  etf = np.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c) @ u.T
  x = (3.0 * etf[np.repeat(np.arange(c), per_class)]).astype(np.float32)
  got = _check(x)
  assert int(got['numerical_rank']) == c - 1


def _ill_conditioned() -> np.ndarray:
  """800 x 40, singular values 1, 0.1, 1e-2, 1e-3, 5e-4, 3e-4, 2e-4 and 33 x 1e-7: rank 7
  under the float32 tolerance 800 eps = 9.5e-5."""
  rng = np.random.default_rng(3)
  u, _ = np.linalg.qr(rng.standard_normal((800, 40)))
  v, _ = np.linalg.qr(rng.standard_normal((40, 40)))
  sigma = np.array([1, 1e-1, 1e-2, 1e-3, 5e-4, 3e-4, 2e-4] + [1e-7] * 33)
  return ((u * sigma) @ v.T).astype(np.float32)


def test_ill_conditioned_where_a_float32_gram_matrix_fails():
  x = _ill_conditioned()
  got = _check(x)
  assert int(got['numerical_rank']) == 7
  # The Gram route squares the condition number: eigenvalues of X^T X in float32 carry an
  # error ~ d eps lambda_1, so sqrt(lambda) is noise below ~2e-3 and the count is wrong.
  s64, _ = _reference(x)
  tol = s64[0] * 800 * EPS32
  gram = jnp.asarray(x).T @ jnp.asarray(x)
  sigma_gram = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram), 0.0))
  assert int(jnp.sum(sigma_gram > tol)) > 7
  # ... while a float64 Gram matrix would be fine (the route docs/metrics.md rejects for
  # needing float64 on the device).
  g64 = np.asarray(x, np.float64).T @ np.asarray(x, np.float64)
  assert int(np.sum(np.sqrt(np.maximum(np.linalg.eigvalsh(g64), 0)) > tol)) == 7


@pytest.mark.parametrize('devices', [1, 2, 3, 8])
def test_any_device_count_gives_the_same_rank(devices):
  x = _ill_conditioned()
  rows = x[: 792 - 792 % devices] if devices == 3 else x
  mesh = _mesh(devices)
  got = metrics.streamed_spectrum(_sharded(rows, mesh))
  s64, rank64 = _reference(rows)
  assert int(got['numerical_rank']) == rank64
  np.testing.assert_allclose(
    np.asarray(got['singular_values']), s64, rtol=0, atol=SIGMA_ATOL * s64[0]
  )


def test_unsharded_input_is_one_block():
  x = _ill_conditioned()
  got = metrics.streamed_spectrum(x)
  assert int(got['numerical_rank']) == int(metrics.numerical_rank(x)) == 7


def test_scale_zero_and_non_finite():
  rng = np.random.default_rng(1)
  x = (rng.standard_normal((64, 5)) @ rng.standard_normal((5, 12))).astype(np.float32)
  mesh = _mesh()
  for scale in (1e30, 1e-30):
    got = metrics.streamed_spectrum(_sharded(x * np.float32(scale), mesh))
    assert int(got['numerical_rank']) == 5
  zero = metrics.streamed_spectrum(_sharded(np.zeros_like(x), mesh))
  assert int(zero['numerical_rank']) == 0 and float(zero['effective_rank']) == 0
  bad = x.copy()
  bad[40, 3] = np.nan
  got = metrics.streamed_spectrum(_sharded(bad, mesh))
  assert int(got['numerical_rank']) == -1 and np.isnan(float(got['effective_rank']))
  # A NaN in a padding row is ignored: padding is zeroed before anything else.
  mask = np.ones(64, bool)
  mask[40] = False
  got = metrics.streamed_numerical_rank(_sharded(bad, mesh), _sharded(mask, mesh))
  assert int(got) == 5


def test_bf16_input_uses_the_rounding_noise_rule():
  # numerical_rank's bf16 rule needs the largest row and column norms: reduced over devices.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((296, 3)) @ rng.standard_normal((3, 40)), jnp.bfloat16)
  got = metrics.streamed_numerical_rank(_sharded(np.asarray(x), _mesh()))
  assert int(got) == int(metrics.numerical_rank(x)) == 3


def test_uneven_rows_are_refused():
  with jax.set_mesh(_mesh()), pytest.raises(ValueError, match='do not split evenly'):
    metrics.streamed_numerical_rank(np.ones((13, 3), np.float32))
