"""Datasets, samplers and transforms: everything before the model."""
