"""Tests of training/: the loop, the LR schedule, resume, many processes."""
