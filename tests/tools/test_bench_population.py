"""tools/bench_population.py: the same points for both halves, each an ordinary point."""

from rankdeficit import experiment
from rankdeficit import population_runs
from tools import bench_population


def test_six_mlp_points_that_form_one_population(tmp_path):
  args = bench_population._parser().parse_args([])  # pylint: disable=protected-access
  points = bench_population.points(args, str(tmp_path))
  assert len(points) == 6 and len({p.workdir for p in points}) == 6
  [group] = population_runs.group_points(points)
  assert group == points
  population_runs.check_group(points)
  config = experiment.build_config(points[-1])
  assert (config.temperature, config.seed, config.train_subset) == (100.0, 1, 10_000)
  assert config.input_on_device and config.steps_per_dispatch == 78
  smoke = bench_population._parser().parse_args(['--smoke', '--seeds=1'])  # pylint: disable=protected-access
  assert [experiment.build_config(p).dataset for p in bench_population.points(smoke, '/x')] == [
    'digits'
  ] * 3
