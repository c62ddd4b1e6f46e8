"""Experiments built on training: ablation suites and Noisy Student."""
