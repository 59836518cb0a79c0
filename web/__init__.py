"""The web dashboard and REST API (``attendance serve``): FastAPI on uvicorn, Jinja pages."""
