"""The ASGI layer: wrap a model-serving app so every AI response discloses AI and leaves evidence.

Example:
    >>> from aiobligations.middleware import ObligationsMiddleware  # doctest: +SKIP
    >>> app.add_middleware(ObligationsMiddleware, obligations=obligations)  # doctest: +SKIP
"""

from .asgi import CONFIG_ENV, ObligationsMiddleware
from .endpoints import Endpoints
from .policy import DEFAULT_AI_ROUTES, Route, RoutePolicy

__all__ = ["CONFIG_ENV", "DEFAULT_AI_ROUTES", "Endpoints", "ObligationsMiddleware", "Route", "RoutePolicy"]
