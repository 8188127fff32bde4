"""Bearer-key authentication as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from openft.domain.entities import Principal
from openft.services.container import Services

_bearer = HTTPBearer(auto_error=False, description="An openft API key: `openft keys create`.")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return services.keys.authenticate(credentials.credentials if credentials else None)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
