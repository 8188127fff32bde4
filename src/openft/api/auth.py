"""Bearer-key authentication as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from openft import logs
from openft.domain.entities import KeyScope, Principal
from openft.domain.errors import PermissionDenied
from openft.services.container import Services

_bearer = HTTPBearer(auto_error=False, description="An openft API key: `openft keys create`.")


# Both dependencies are async so that a request whose key is cached makes no thread hop
# before its endpoint; only a key seen for the first time is looked up in a thread.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def any_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Whoever the key belongs to, whatever it may do."""
    key = credentials.credentials if credentials else None
    principal = services.keys.cached(key)
    if principal is None:
        principal = await run_in_threadpool(services.keys.authenticate, key)
    _bind_log_context(request, principal)
    return principal


def _bind_log_context(request: Request, principal: Principal) -> None:
    """The request's log lines say whose it is and which job it is about. An async
    dependency runs in the request's own task, so this reaches its endpoint, its error
    handlers and uvicorn's access line."""
    params = request.path_params
    logs.bind(
        project_id=principal.project_id or None,
        job_id=params.get("fine_tuning_job_id") or params.get("job_id"),
    )


async def current_principal(
    principal: Annotated[Principal, Depends(any_principal)],
) -> Principal:
    # An admin key is the organisation's, not a project's: it sees no project's data.
    if principal.scope is KeyScope.ADMIN:
        raise PermissionDenied(
            "An admin key manages the organisation (checkpoint permissions) only: "
            "use a project's key here."
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_principal(
    principal: Annotated[Principal, Depends(any_principal)],
) -> Principal:
    if principal.scope is not KeyScope.ADMIN:
        # OpenAI's answer to a project key on an admin route.
        raise PermissionDenied(
            "You have insufficient permissions for this operation: it needs an admin key "
            "(`openft keys create --scope admin`)."
        )
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


async def worker_principal(principal: CurrentPrincipal) -> Principal:
    if principal.scope is not KeyScope.WORKER:
        raise PermissionDenied(
            "The worker protocol needs a worker key: `openft keys create --scope worker`."
        )
    return principal


WorkerPrincipal = Annotated[Principal, Depends(worker_principal)]
