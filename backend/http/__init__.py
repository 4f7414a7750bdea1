"""The HTTP API: the app (``app.py``), auth dependencies (``deps.py``), request and
response models (``schemas.py``), error mapping (``errors.py``), one router per resource
(``routers/``). The error body is shared by every service: ``protocol/http_errors.py``."""
