"""Python SDK and `titans` CLI for Titans Serve. Not built yet: see the issues."""
