"""Data: the public ISIC layouts read and checked, images prepared, near-duplicates found, folds."""
