"""Tests of evaluation/: predict, evaluate, ensemble, selection, export, explain and the clinical results."""
