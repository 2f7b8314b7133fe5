"""Metrics: pure functions of predictions and references (scikit-learn, seqeval, rouge-score), below tasks."""
