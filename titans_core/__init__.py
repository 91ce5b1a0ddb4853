"""Titans models and their neural long-term memory: the library under Titans Serve (no web code)."""

__version__ = "0.1.0"
