"""Sampling: generation from a checkpoint, sampling options, diversity metrics."""
