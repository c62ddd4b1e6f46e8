"""Synthetic ISIC-like data in the real layouts: the generator and the lesion renderer."""
