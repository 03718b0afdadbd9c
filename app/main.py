"""The FastAPI app factory: `create_app()` for uvicorn (`--factory`), or `pricer serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pricer.app import errors
from pricer.app.routes import router
from pricer.evaluator.service import PricerService
from pricer.evaluator.settings import Settings
from pricer.evaluator.views.report import Views

MAX_BODY_BYTES = 2 * 1024 * 1024


def create_app(settings: Settings | None = None, *, service: PricerService | None = None) -> FastAPI:
    """The pricer API around one `PricerService` (made from `settings`, or the environment, when not given)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service or PricerService(settings or Settings())
        app.state.views = Views(app.state.service)
        app.state.service.start()
        yield
        app.state.service.stop()

    app = FastAPI(
        title="pricer",
        summary="Evaluate a fine-tuned price predictor's checkpoints, pick the best, serve its predictions.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # refuse oversized bodies before reading them
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    app.include_router(router)
    return app
