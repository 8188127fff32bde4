"""Liveness: answers without a key, and checks that the database answers too."""

from __future__ import annotations

from fastapi import APIRouter

from openft.api.auth import ServicesDep
from openft.wire import Health

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["health"])
def healthz(services: ServicesDep) -> dict[str, str]:
    services.check_health()
    return {"status": "ok"}
