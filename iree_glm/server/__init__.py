"""The OpenAI-compatible HTTP server over a runtime Session."""
