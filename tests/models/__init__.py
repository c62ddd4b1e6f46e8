"""Tests of models/: the network, its head and metadata branch, weights from every source."""
