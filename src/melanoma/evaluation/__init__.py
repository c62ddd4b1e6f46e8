"""Evaluation: prediction, out-of-fold scores, ensembles, member screening, export."""
