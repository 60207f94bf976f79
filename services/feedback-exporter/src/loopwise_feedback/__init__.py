"""Loopwise feedback-exporter service: training sets and model-vs-human quality metrics."""
