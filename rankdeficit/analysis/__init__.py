"""Post-hoc analysis of a trained run: per-layer feature extraction, linear probes and
their layer conventions, the analysis options (`AnalysisConfig`) and its report."""
