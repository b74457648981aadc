"""Smoke sweep: the offline quickstart (MLP on the bundled digits), T in {1, 100}, a few steps.

python -m rankdeficit.sweep --sweep=configs/sweeps/smoke.py --executor=local
"""


def get_sweep():
  return {
    'config': 'configs/quickstart.py',
    'points': [
      {
        'temperature': t,
        'seed': 0,
        'num_train_steps': 20,
        'checkpoint_every_steps': 10,
        'log_every_steps': 10,
        'eval_every_steps': 20,
      }
      for t in (1.0, 100.0)
    ],
    'analyze': {
      'ood_dataset': '',
      'probe_epochs': 2,
      'probe_batch_size': 256,
      'max_dims': 256,
      'plots': False,
    },
    'slurm': {'time': 15, 'cpus_per_task': 2, 'mem': '8GB', 'array_parallelism': 2},
  }
