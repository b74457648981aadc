"""Post-hoc analysis of a trained run (`rankdeficit.analyze.analyze_run`), one step per module:

config         the analysis options (`AnalysisConfig`)
loading        the run's checks, checkpoint, final T, classes and input shape
memory_plan    layer groups whose features fit the host-memory budget
extraction     per-layer features (a coordinate subset) of every split
measurements   the metric steps applied per layer group and on the final layers
ranks          SR, post-softmax rank, logits norms, representation ranks
probes         linear probes, kappa and rho; probe_layers: their layer conventions
depth          per-layer probe accuracies, kappa / rho under every convention
collapse       Neural Collapse NC1-NC4 and OrthoDev
ood_detection  NECO OOD detection
attention      attention-map metrics of ViTs
header         what was analysed (analysis.json's header)
report         analysis.json, analysis.md and the plots
timing         the stages' wall-clock timings
"""
