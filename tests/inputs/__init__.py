"""Tests of inputs/: decoding, the augmentation recipe in both pipelines, the loader."""
