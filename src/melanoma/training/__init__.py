"""Training: the loop, fold by fold, on one device or many (torchrun)."""
