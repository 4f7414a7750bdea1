"""One router per resource; ``backend.http.app`` includes them all (``ROUTERS``)."""
