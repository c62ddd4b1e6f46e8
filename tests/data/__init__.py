"""Tests of data/: the readers of each layout, dedup and its review page, folds, prepare, metadata."""
