"""Measurement: evaluation metrics, restoring a run from its checkpoint, latency benchmarks
(forced gates and trained gates) and model summaries."""
