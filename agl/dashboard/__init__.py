"""The live dashboard: one static page served by the API, reading the API's own read routes."""

from agl.dashboard.routes import router

__all__ = ["router"]
