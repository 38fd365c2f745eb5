"""Skein gate service."""
