"""Tests of experiments/: ablation suites, Noisy Student, SLURM."""
