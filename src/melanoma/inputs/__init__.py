"""Inputs: images to tensors (the dataset, the augmentation pipelines, the data loader)."""
