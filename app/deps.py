"""Dependencies the routes declare: the service object and the API token check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pricer.evaluator.service import PricerService

bearer = HTTPBearer(auto_error=False)


def get_service(request: Request) -> PricerService:
    return request.app.state.service


ServiceDep = Annotated[PricerService, Depends(get_service)]


def require_token(service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """When `PRICER_API_TOKEN` is set, the request must carry it as a bearer token."""
    expected = service.settings.api_token
    if expected is None:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid 'Authorization: Bearer <token>' header is required",
            {"WWW-Authenticate": "Bearer"},
        )


def require_predict_token(
    service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """`POST /predict` needs the API token too when `PRICER_PREDICT_NEEDS_TOKEN` is set."""
    if service.settings.predict_needs_token:
        require_token(service, credentials)
