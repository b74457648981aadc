"""What a run will do, decided before it starts: the config's validation (one-line errors
before anything compiles or is written) and the frozen run plan that train, analyze and
load_run all read."""
