"""The one place where pricer's typed errors become HTTP status codes."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pricer.evaluator import errors

log = logging.getLogger(__name__)

# most specific first: the first class an error is an instance of decides
STATUS_CODES: list[tuple[type[errors.PricerError], int]] = [
    (errors.InvalidRepoId, 422),
    (errors.RepoNotFound, 404),
    (errors.RevisionNotFound, 404),
    (errors.DatasetNotFound, 404),
    (errors.JobNotFound, 404),
    (errors.WatchNotFound, 404),
    (errors.NotEvaluated, 404),
    (errors.InvalidAdapter, 422),
    (errors.InvalidDataset, 422),
    (errors.InvalidPredictionInput, 422),
    (errors.ModelNotReady, 503),
    (errors.HubUnavailable, 503),
    (errors.ModelLoadError, 503),
]


def status_code(exc: errors.PricerError) -> int:
    return next((code for cls, code in STATUS_CODES if isinstance(exc, cls)), 400)


async def _pricer_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.PricerError)
    return JSONResponse({"detail": str(exc)}, status_code=status_code(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the service logged it"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.PricerError, _pricer_error)
    app.add_exception_handler(Exception, _unexpected)
