"""Models: the network, its weights, checkpoints and inference (with test-time augmentation)."""
