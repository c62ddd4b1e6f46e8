"""Tests of tabular/ (and ISIC 2024's path through data/ and synthetic/): features, the leak guard, gbdt."""
