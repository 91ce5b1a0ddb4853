"""The HTTP routers: OpenAI-compatible generation, sessions and ingestion, health and metrics."""
