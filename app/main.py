"""The FastAPI app factory: `create_app()` for uvicorn (`--factory`), or `pricer serve`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from pricer.app import errors
from pricer.app.edge import MAX_BODY_BYTES, Edge
from pricer.app.routes import router
from pricer.evaluator.service import PricerService
from pricer.evaluator.settings import Settings
from pricer.evaluator.views.report import Views

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, service: PricerService | None = None) -> FastAPI:
    """The pricer API around one `PricerService` (made from `settings`, or the environment, when not given)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service or PricerService(settings or Settings())
        app.state.views = Views(app.state.service)
        _warn_open_doors(app.state.service.settings)
        app.state.service.start()
        yield
        app.state.service.stop()

    app = FastAPIOffline(  # /docs and /redoc from files in the package: they render with no internet
        title="pricer",
        summary="Evaluate a fine-tuned price predictor's checkpoints, pick the best, serve its predictions.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(Edge, max_body=MAX_BODY_BYTES)
    app.include_router(router)
    return app


def _warn_open_doors(settings: Settings) -> None:
    if settings.api_token is None:
        log.warning("PRICER_API_TOKEN is not set: anyone who reaches this port can queue evaluations and watches")
    if settings.webhook_secret is None:
        with_token = "accepts only callers with the API token" if settings.api_token else "is refused"
        log.warning("PRICER_WEBHOOK_SECRET is not set: POST /webhooks/hub %s", with_token)
