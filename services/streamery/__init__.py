"""Skein streamery service."""
