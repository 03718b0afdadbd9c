"""The Hugging Face Hub webhook: its secret header and its payload, read here; the service only hears "evaluate this"."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, status

from pricer.app.deps import ServiceDep


def require_webhook_secret(
    service: ServiceDep, secret: Annotated[str | None, Header(alias="X-Webhook-Secret")] = None
) -> None:
    """When `PRICER_WEBHOOK_SECRET` is set, the call must carry it in `X-Webhook-Secret`."""
    expected = service.settings.webhook_secret
    if expected is not None and not secrets.compare_digest((secret or "").encode(), expected.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid X-Webhook-Secret header is required")


WebhookSecret = Depends(require_webhook_secret)


def content_update(payload: dict) -> tuple[str, str] | None:
    """(repo, revision) when the payload says a model repo's content was created or updated; None otherwise."""
    event, repo = payload.get("event") or {}, payload.get("repo") or {}
    if not isinstance(event, dict) or not isinstance(repo, dict):
        return None
    if repo.get("type") != "model" or not str(event.get("scope", "")).startswith("repo.content"):
        return None
    if event.get("action") not in ("create", "update") or not repo.get("name"):
        return None
    return str(repo["name"]), str(repo.get("headSha") or "main")
