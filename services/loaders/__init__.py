"""Warehouse loaders: a shared core and one folder per warehouse type."""
