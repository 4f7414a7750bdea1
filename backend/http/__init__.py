"""The HTTP API: the FastAPI app, its routes, and the one error body shape."""
