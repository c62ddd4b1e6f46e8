"""`python -m melanoma` (and `torchrun -m melanoma`) runs the command line."""

from melanoma.cli import app

app()
