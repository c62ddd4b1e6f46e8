"""Tests of synthetic/: the generator writes the real layouts with the properties the tests rely on."""
