"""Skein loaders service."""
