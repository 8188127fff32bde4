"""Liveness: answers without a key, and checks that the database answers too."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from openft.api.auth import ServicesDep
from openft.api.schemas import Health

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["health"])
def healthz(services: ServicesDep) -> dict[str, str]:
    with services.db.read() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok"}
