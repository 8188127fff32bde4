"""Webhook endpoints of a project (openft's own API: OpenAI sets them in its dashboard).
Terminal transitions of the project's jobs are posted to them, signed; see
services/webhooks.py."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.responses import JSON
from openft.wire import (
    ListWebhookDeliveries,
    ListWebhookEndpoints,
    WebhookEndpointObject,
    delivery_json,
    webhook_json,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=error_responses(401, 422))


class NewWebhook(BaseModel):
    url: str = Field(min_length=1, max_length=2048, description="An http(s) URL to post to.")


@router.post(
    "",
    response_model=WebhookEndpointObject,
    operation_id="createWebhookEndpoint",
    responses=error_responses(400),
)
def create_webhook(body: NewWebhook, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    # The secret is shown in this answer only.
    return JSON(webhook_json(services.webhooks.add(principal, body.url), with_secret=True))


@router.get("", response_model=ListWebhookEndpoints, operation_id="listWebhookEndpoints")
def list_webhooks(services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    endpoints = services.webhooks.endpoints(principal)
    return JSON({"object": "list", "data": [webhook_json(e) for e in endpoints]})


@router.delete(
    "/{webhook_id}", operation_id="deleteWebhookEndpoint", responses=error_responses(404)
)
def delete_webhook(webhook_id: str, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    services.webhooks.remove(principal, webhook_id)
    return JSON({"id": webhook_id, "object": "webhook_endpoint", "deleted": True})


@router.get(
    "/{webhook_id}/deliveries",
    response_model=ListWebhookDeliveries,
    operation_id="listWebhookDeliveries",
    responses=error_responses(404),
)
def list_deliveries(webhook_id: str, services: ServicesDep, principal: CurrentPrincipal) -> JSON:
    deliveries = services.webhooks.deliveries(principal, webhook_id)
    return JSON({"object": "list", "data": [delivery_json(d) for d in deliveries]})
