"""ViT: public checkpoint names/shapes, and `load_pretrained` round trips and failures."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rankdeficit.models import vit
from rankdeficit.models.initializers import Init


def tiny_vit(num_classes=10, **kwargs):
  kw = dict(patch_size=4, width=32, depth=2, num_heads=4, mlp_dim=64, init_scheme=Init('xavier'))
  kw.update(kwargs)
  return vit.ViT(num_classes=num_classes, **kw)


def init_params(model, size, seed):
  """Random float32 params of the model's structure; model.init's compile takes seconds."""
  x = jnp.zeros((1, size, size, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x)['params'])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def save_npz(path, flat):
  np.savez(path, **flat)
  return str(path)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_public_names_and_shapes_of_vit_b16():
  model = vit.ViT(num_classes=1000)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  flat = traverse_util.flatten_dict(params['params'], sep='/')
  public = {
    k: jax.ShapeDtypeStruct(vit._public_shape(k, v.shape, 12), v.dtype) for k, v in flat.items()
  }
  expected = {
    'cls': (1, 1, 768),
    'embedding/kernel': (16, 16, 3, 768),
    'embedding/bias': (768,),
    'Transformer/posembed_input/pos_embedding': (1, 197, 768),
    'Transformer/encoderblock_0/LayerNorm_0/scale': (768,),
    'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel': (768, 12, 64),
    'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/bias': (12, 64),
    'Transformer/encoderblock_11/MultiHeadDotProductAttention_1/out/kernel': (12, 64, 768),
    'Transformer/encoderblock_11/MultiHeadDotProductAttention_1/out/bias': (768,),
    'Transformer/encoderblock_11/MlpBlock_3/Dense_0/kernel': (768, 3072),
    'Transformer/encoderblock_11/MlpBlock_3/Dense_1/bias': (768,),
    'Transformer/encoderblock_11/LayerNorm_2/bias': (768,),
    'Transformer/encoder_norm/scale': (768,),
    'head/kernel': (768, 1000),
    'head/bias': (1000,),
  }
  for key, shape in expected.items():
    assert public[key].shape == shape, key
  assert len(public) == 1 + 2 + 1 + 12 * 16 + 2 + 2  # cls, embedding, posemb, blocks, norm, head


def test_round_trip(tmp_path):
  model = tiny_vit()
  source = init_params(model, 16, seed=1)
  target = init_params(model, 16, seed=2)
  path = save_npz(tmp_path / 'vit.npz', vit.to_public(source, num_heads=4))
  loaded = vit.load_pretrained(target, path, num_heads=4)
  assert_trees_equal(loaded, source)
  # And the loaded model computes what the source model computes.
  x = np.random.default_rng(3).standard_normal((2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(
    model.apply({'params': loaded}, x)[0], model.apply({'params': source}, x)[0], rtol=1e-6
  )


def test_other_head_is_kept_and_posemb_is_resized(tmp_path, caplog):
  source_model = tiny_vit(num_classes=1000)
  target_model = tiny_vit(num_classes=10)
  source = init_params(source_model, 16, seed=1)  # 4x4 patch grid
  target = init_params(target_model, 32, seed=2)  # 8x8 patch grid
  path = save_npz(tmp_path / 'vit.npz', vit.to_public(source, num_heads=4))
  with caplog.at_level('INFO'):
    loaded = vit.load_pretrained(target, path)
  assert 'head' in caplog.text and 'Resized position embeddings' in caplog.text
  np.testing.assert_array_equal(loaded['head']['kernel'], target['head']['kernel'])
  np.testing.assert_array_equal(loaded['cls'], source['cls'])
  np.testing.assert_array_equal(
    loaded['Transformer']['encoderblock_1']['MlpBlock_3']['Dense_0']['kernel'],
    source['Transformer']['encoderblock_1']['MlpBlock_3']['Dense_0']['kernel'],
  )
  pe_src = source['Transformer']['posembed_input']['pos_embedding']
  pe = loaded['Transformer']['posembed_input']['pos_embedding']
  assert pe.shape == (1, 65, 32)
  np.testing.assert_array_equal(pe[:, 0], pe_src[:, 0])  # the class token's entry is kept
  # Bilinear upsampling of a constant grid is that constant.
  const = {
    **vit.to_public(source, 4),
    'Transformer/posembed_input/pos_embedding': np.full((1, 17, 32), 0.5, np.float32),
  }
  loaded = vit.load_pretrained(target, save_npz(tmp_path / 'const.npz', const))
  np.testing.assert_allclose(
    loaded['Transformer']['posembed_input']['pos_embedding'], 0.5, rtol=1e-6
  )
  logits, reps = target_model.apply({'params': loaded}, jnp.zeros((1, 32, 32, 3)))
  assert logits.shape == (1, 10) and reps['embed'].shape == (1, 65, 32)


def test_missing_key_wrong_shape_wrong_heads(tmp_path):
  model = tiny_vit()
  params = init_params(model, 16, seed=1)
  public = vit.to_public(params, num_heads=4)

  key = 'Transformer/encoderblock_1/LayerNorm_2/scale'
  missing = {k: v for k, v in public.items() if k != key}
  with pytest.raises(ValueError, match=key):
    vit.load_pretrained(params, save_npz(tmp_path / 'missing.npz', missing))

  key = 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'
  wrong = {**public, key: np.zeros((32, 65), np.float32)}
  with pytest.raises(ValueError, match=key):
    vit.load_pretrained(params, save_npz(tmp_path / 'wrong.npz', wrong))

  with pytest.raises(ValueError, match='heads'):
    vit.load_pretrained(params, save_npz(tmp_path / 'ok.npz', public), num_heads=8)


def test_refuses_pickled_arrays(tmp_path):
  params = init_params(tiny_vit(), 16, seed=1)
  public = vit.to_public(params, num_heads=4)
  public['cls'] = np.array([{'not': 'an array'}], dtype=object)
  path = save_npz(tmp_path / 'pickled.npz', public)
  with pytest.raises(ValueError, match='pickle'):
    vit.load_pretrained(params, path)
