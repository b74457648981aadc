"""Post-hoc analysis of a trained run (`rankdeficit.analyze.analyze_run`), one step per module:

config           the analysis options (`AnalysisConfig`)
loading          the run's checks, checkpoint, final T, classes and input shape
memory_plan      layer groups whose features fit each device's budget (logged)
memory_model     the memory a config's analysis needs on a pod shape (`--plan_only`)
rows             where features live: rows sharded over the mesh's `data` axis
extraction       per-layer features (a coordinate subset) of every split, kept sharded
measurements     the metric steps applied per layer group and on the final layers
feature_metrics  SR, ranks, probe accuracies, NC, OrthoDev, NECO, attention metrics
probes           linear probes, kappa and rho; probe_layers: their layer conventions
sharded_probes   the probes trained data-parallel on row-sharded features
header           what was analysed (analysis.json's header)
report           analysis.json, analysis.md and the plots
timing           the stages' wall-clock timings
"""
