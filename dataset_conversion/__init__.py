"""Converters from public datasets and generators of phantom datasets into the raw format."""
