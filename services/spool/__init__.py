"""Skein spool service."""
