"""Titans Serve's HTTP service (FastAPI, batching engine, Redis store). Not built yet: see the issues."""
