"""Config I/O of `rankdeficit.run.checkpointing`: config.json round trip and flat hparams."""

from clu import metric_writers
import ml_collections
import pytest

from configs import quickstart
from configs import resnet20_c10
from rankdeficit.run import checkpointing


def test_load_config_rebuilds_the_saved_config_from_json_alone(tmp_path):
  config = resnet20_c10.get_config()
  config.model.width = 32
  checkpointing.save_config(config, str(tmp_path))
  loaded = checkpointing.load_config(str(tmp_path))
  assert loaded.to_dict() == config.to_dict()  # tuples come back as tuples
  assert isinstance(loaded.lr_milestones, tuple)
  with pytest.raises(AttributeError):
    loaded.not_a_field = 1  # locked, as before


def test_flat_hparams_cover_nested_fields_and_tell_models_apart(tmp_path):
  a, b = quickstart.get_config(), quickstart.get_config()
  b.model.width = a.model.width + 1
  flat_a, flat_b = checkpointing.flat_hparams(a), checkpointing.flat_hparams(b)
  assert flat_a['model.width'] == a.model.width and flat_a['model.name'] == a.model.name
  assert flat_a['lr_milestones'] == str(a.lr_milestones)
  assert flat_a != flat_b
  assert all(isinstance(v, (bool, int, float, str)) for v in flat_a.values())
  n_leaves = len(ml_collections.ConfigDict(a).to_dict()) - 1 + len(a.model)
  assert len(flat_a) >= n_leaves
  writer = metric_writers.create_default_writer(str(tmp_path))
  writer.write_hparams(flat_a)  # accepted by CLU / TensorBoard's HParams plugin
  writer.close()
