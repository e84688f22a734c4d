"""A route class for configuration endpoints: an invalid body is `CONFIGURATION_INVALID`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

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
