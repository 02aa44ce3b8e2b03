"""Scoring generated audio against the real corpus: the reference classifier, the metrics and the report."""
