"""Synthetic data generation: the teacher backends, prompts, chunking and the generation pipelines
with their per-leaf cache."""
