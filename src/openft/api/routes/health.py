"""Liveness and readiness, without a key: `/healthz` answers while the process lives;
`/readyz` answers 200 only while the database and the blob store both answer (503,
naming which does not, otherwise), for a load balancer to route by."""

from __future__ import annotations

from fastapi import APIRouter

from openft.api.auth import ServicesDep
from openft.api.responses import JSON
from openft.wire import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep) -> JSON:
    checks = services.readiness()
    ready = all(value == "ok" for value in checks.values())
    body: Readiness = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSON(body, status_code=200 if ready else 503)
