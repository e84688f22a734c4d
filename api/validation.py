"""A route class for configuration endpoints: an invalid body is `CONFIGURATION_INVALID`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from api.errors import field_errors
from domain.errors import ConfigurationInvalid


class ConfigRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = list(exc.errors())
                if (
                    errors
                    and all(e.get("loc", ("",))[0] == "body" for e in errors)
                    and not any(e.get("type") == "json_invalid" for e in errors)
                ):
                    raise ConfigurationInvalid(
                        "Configuration is invalid", {"fields": field_errors(errors)}
                    ) from exc
                raise

        return route_handler


def is_config_request(scope: Scope) -> bool:
    """Whether the request goes to a configuration endpoint (a ConfigRoute of the app in the
    scope): input refused before routing (api/input_guard.py) then answers as the route would,
    CONFIGURATION_INVALID rather than VALIDATION_ERROR."""
    router = getattr(scope.get("app"), "router", None)
    for route in getattr(router, "routes", ()):
        # FastAPI keeps an included router as one route (`original_router`), older versions
        # copy each of its routes; the config routers are made with route_class=ConfigRoute.
        included = getattr(route, "original_router", None)
        config = isinstance(route, ConfigRoute) or (
            included is not None
            and issubclass(getattr(included, "route_class", object), ConfigRoute)
        )
        if config and route.matches(scope)[0] is Match.FULL:
            return True
    return False
