"""Evaluation metrics shared by tasks."""
