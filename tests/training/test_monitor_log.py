"""The monitor's on-disk history: round trip, resume truncation, and the train-loop hook."""

import json
import os

import numpy as np

from configs import base
from rankdeficit.training import monitor_log
from rankdeficit.training import train


def _metrics(seed: float) -> dict:
  return {
    'loss': np.float32(seed),
    'rank/pre_softmax': np.int32(3),
    'sv/logits': np.array([seed, 1.0, 0.5]),
    'alignment/dense_0': np.full((2, 2), seed / 10, np.float32),
  }


def test_round_trip_keeps_exact_values(tmp_path):
  log = monitor_log.MonitorLog(str(tmp_path))
  for step in (0, 5, 10):
    log.write(step, _metrics(step + 0.25), temperature=100.0)
  hist = monitor_log.read_monitor(str(tmp_path))
  np.testing.assert_array_equal(hist.steps, [0, 5, 10])
  np.testing.assert_allclose(hist.scalar('loss'), [0.25, 5.25, 10.25])
  np.testing.assert_allclose(hist.scalar('temperature'), 100.0)
  np.testing.assert_allclose(hist.vector('sv/logits')[:, 0], [0.25, 5.25, 10.25])
  steps, mats = hist.matrices('alignment/dense_0')
  np.testing.assert_array_equal(steps, [0, 5, 10])
  np.testing.assert_allclose(mats[:, 0, 0], np.float32([0.025, 0.525, 1.025]))
  assert 'rank/pre_softmax' in hist.names('rank/')


def test_resume_drops_records_after_the_checkpoint(tmp_path):
  log = monitor_log.MonitorLog(str(tmp_path))
  for step in (0, 5, 10):
    log.write(step, _metrics(1.0))
  # Killed after step 10's monitor call but resumed from the step-5 checkpoint.
  log = monitor_log.MonitorLog(str(tmp_path), start_step=5)
  log.write(10, _metrics(7.0))
  hist = monitor_log.read_monitor(str(tmp_path))
  np.testing.assert_array_equal(hist.steps, [0, 5, 10])
  np.testing.assert_allclose(hist.scalar('loss'), [1.0, 1.0, 7.0])
  with open(os.path.join(tmp_path, 'monitor', 'metrics.jsonl')) as f:
    assert [json.loads(l)['step'] for l in f] == [0, 5, 10]  # no duplicate line


def test_fresh_start_discards_a_stale_log_and_partial_lines(tmp_path):
  log = monitor_log.MonitorLog(str(tmp_path))
  log.write(3, _metrics(1.0))
  with open(log.path, 'a') as f:
    f.write('{"step": 4, "loss"')  # interrupted write
  assert list(monitor_log.read_monitor(str(tmp_path)).steps) == [3]
  monitor_log.MonitorLog(str(tmp_path), start_step=0)
  assert len(monitor_log.read_monitor(str(tmp_path)).records) == 0
  assert not [p for p in os.listdir(log.directory) if p.endswith('.npz')]


def test_training_writes_monitor_and_event_history(tmp_path):
  c = base.get_config()
  c.dataset, c.ood_dataset, c.augment = 'digits', '', 'none'
  c.model.name, c.model.width, c.model.depth = 'mlp', 16, 2
  c.batch_size = c.eval_batch_size = c.metrics_batch_size = 32
  c.learning_rate, c.momentum, c.lr_milestones = 0.05, 0.0, ()
  c.num_train_steps, c.log_every_steps, c.eval_every_steps = 4, 2, 2
  c.metrics_every_steps, c.checkpoint_every_steps = 2, 2
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(c, workdir)
  hist = monitor_log.read_monitor(workdir)
  np.testing.assert_array_equal(hist.steps, [0, 2, 4])
  layers = [n[len('alignment_max/') :] for n in hist.ordered('alignment_max/')]
  assert layers == hist.order['layers'] == ['dense_0', 'dense_1', 'head']
  assert hist.order['reps'] == ['dense_0', 'dense_1']
  steps, mats = hist.matrices('alignment/head')
  assert mats.shape[0] == 3 and np.all((mats >= 0) & (mats <= 1 + 1e-5))
  assert np.all(hist.scalar('logits_norm') > 0)
  assert hist.vector('sv/logits').shape[0] == 3
  events = monitor_log.read_event_scalars(workdir, 'eval/')
  np.testing.assert_array_equal(events['eval/accuracy'][0], [2, 4])
  assert np.all((events['eval/accuracy'][1] >= 0) & (events['eval/accuracy'][1] <= 1))


def test_forward_order_beats_sorted_keys(tmp_path):
  log = monitor_log.MonitorLog(str(tmp_path))
  log.write(
    0,
    {
      'alignment_max/stem': 1.0,
      'alignment_max/layer1': 2.0,
      'alignment_max/head': 3.0,
      'rank/rep/b': 1,
      'rank/rep/a': 2,
    },
  )
  assert monitor_log.read_monitor(str(tmp_path)).ordered('alignment_max/') == [
    'alignment_max/layer1',
    'alignment_max/stem',
    'alignment_max/head',
  ]  # fallback
  log.write_order({'layers': ['stem', 'layer1', 'head'], 'reps': ['b', 'a']})
  hist = monitor_log.read_monitor(str(tmp_path))
  assert hist.ordered('alignment_max/') == [
    'alignment_max/stem',
    'alignment_max/layer1',
    'alignment_max/head',
  ]
  assert hist.ordered('rank/rep/') == ['rank/rep/b', 'rank/rep/a']
