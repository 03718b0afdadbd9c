"""The Hugging Face Hub webhook: its secret header and its payload, read here; the service only hears "evaluate this"."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from pricer.app.deps import ServiceDep, bearer, require_token


def require_webhook_secret(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    secret: Annotated[str | None, Header(alias="X-Webhook-Secret", max_length=1024)] = None,
) -> None:
    """The call carries `PRICER_WEBHOOK_SECRET` in `X-Webhook-Secret`; with no secret configured, it must carry
    the API token instead, and with neither configured the webhook is refused (it would queue work for anyone)."""
    expected = service.settings.webhook_secret
    if expected is not None:
        if not secrets.compare_digest((secret or "").encode(), expected.get_secret_value().encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid X-Webhook-Secret header is required")
        return
    if service.settings.api_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "webhooks are off: set PRICER_WEBHOOK_SECRET to accept them")
    require_token(service, credentials)


WebhookSecret = Depends(require_webhook_secret)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # the Hub sends more than pricer reads


class WebhookEvent(_Open):
    action: str = Field(default="", max_length=64)
    scope: str = Field(default="", max_length=128)


class WebhookRepo(_Open):
    type: str = Field(default="", max_length=32)
    name: str = Field(default="", max_length=200)
    headSha: str | None = Field(default=None, max_length=64)  # noqa: N815  (the Hub's own name)


class WebhookPayload(_Open):
    """The part of a Hub webhook payload pricer reads (https://huggingface.co/docs/hub/webhooks)."""

    event: WebhookEvent = Field(default_factory=WebhookEvent)
    repo: WebhookRepo = Field(default_factory=WebhookRepo)


def content_update(payload: WebhookPayload) -> tuple[str, str] | None:
    """(repo, revision) when the payload says a model repo's content was created or updated; None otherwise."""
    event, repo = payload.event, payload.repo
    if repo.type != "model" or not event.scope.startswith("repo.content") or event.action not in ("create", "update"):
        return None
    if not repo.name:
        return None
    return repo.name, repo.headSha or "main"
