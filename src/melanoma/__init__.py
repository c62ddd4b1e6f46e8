"""Melanoma classification from dermoscopy images (SIIM-ISIC 2020 winning system, rebuilt)."""

__version__ = "0.1.0"
