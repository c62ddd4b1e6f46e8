"""Tests of cli/: what the command line says about itself."""
