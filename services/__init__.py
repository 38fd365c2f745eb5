"""Skein's services: gate, streamery, spool, loaders."""
