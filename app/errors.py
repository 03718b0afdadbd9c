"""The one place where errors become HTTP answers: every 4xx and 5xx has the body `ErrorBody`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

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
    (errors.InvalidTrainingConfig, 422),
    (errors.InvalidRequest, 422),
    (errors.RunFolderInUse, 409),
    (errors.StoreUnavailable, 503),
    (errors.ModelNotReady, 503),
    (errors.HubUnavailable, 503),
    (errors.ModelLoadError, 503),
    (errors.PublishFailed, 502),
]


class ErrorBody(BaseModel):
    """What every error answer holds: a sentence, and for a request that failed validation, each field's error."""

    detail: str = Field(description="what went wrong, in words")
    errors: list[dict] | None = Field(default=None, description="for a 422 from validation: one entry per field (loc, msg, type)")


def status_code(exc: errors.PricerError) -> int:
    return next((code for cls, code in STATUS_CODES if isinstance(exc, cls)), 400)


def _answer(status: int, detail: str, *, errors: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorBody(detail=detail, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


async def _pricer_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.PricerError)
    return _answer(status_code(exc), request.app.state.service.redact(str(exc)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _answer(exc.status_code, str(exc.detail), headers=exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    found = [{key: e[key] for key in ("loc", "msg", "type") if key in e} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}" for e in found)
    return _answer(422, summary or "invalid request", errors=jsonable_encoder(found))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return _answer(500, "internal error; the service logged it")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.PricerError, _pricer_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
