"""Schemathesis over the live OpenAPI document of a real `pricer serve`: no 5xx, nothing the document does not say.

A real server process (`make_server`: uvicorn, the app's lifespan, the worker threads, SQLite) serves the tiny LoRA
run, with checkpoint-10 evaluated and served before fuzzing, so the GET routes and /predict answer 200 with real
bodies and not only 404s. Its Hub lookups go to the loopback fake Hub, so nothing leaves the machine. Schemathesis
reads the document from the server's own GET /openapi.json.

Every generated request (schemathesis' examples, coverage and fuzzing phases, positive and negative data) is sent
as generated first: on the routes behind the API token that is a made-up or missing token, so the unauthenticated
answer is checked too; then again with the real token. Each answer must be no server error and carry a status code
the document lists for the operation, the content type it names and a body its schema accepts. (Schemathesis'
`ignored_auth` is not among the checks: /predict and /webhooks/hub declare the bearer token, which settings make
optional there.) Examples per operation are bounded and derandomized,
so every run sends the same requests. One test, one subtest per operation.

Random generation seldom sends the values that break JSON APIs, so a second test sends them on purpose, each as
its own schemathesis case with the same checks, derived from the document: NaN and +-Infinity (Python's JSON
spelling) and integers past 64 bits in every body field, lone UTF-16 surrogates in every string field, integers past
64 bits in every integer path parameter, and NaN as a whole body. It lists every failure, not the first one.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server import API_TOKEN

REPO = "local/tiny-run"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
MAX_EXAMPLES = 20  # fuzzing examples per operation, on top of the examples and coverage phases' own cases
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _config() -> schemathesis.Config:
    """Everything explicit, so no schemathesis.toml nor Hypothesis' CI profile changes what a run sends."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20240601,
            "suppress-health-check": ["all"],  # a live server on 2 slow cores is slow next to Hypothesis' budget
            "request-timeout": 60,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
        }
    )


@pytest.fixture
def live_server(make_server, hub_server):
    """`pricer serve` with checkpoint-10 of the tiny run evaluated and served; its log's tracebacks shown after."""
    server = make_server(HF_ENDPOINT=hub_server.endpoint).start()  # make_server stops it
    queued = server.client.post("/evaluate", json={"repo": REPO, "revision": "checkpoint-10"}, headers=AUTH)
    assert queued.status_code == 202, queued.text
    done = server.wait_for(queued.json()["id"])
    assert done["status"] == "done", done
    server.wait_served(done["commit"])
    assert server.client.post("/predict", json={"description": "Cordless drill, 20V"}, headers=AUTH).status_code == 200
    yield server
    tracebacks = _tracebacks(server.log.read_text(errors="replace"))
    if tracebacks:  # pytest shows it when the test failed
        counts = Counter(block.splitlines()[-1][:200] for block in tracebacks)
        print(f"tracebacks in {server.log}, by exception:", *(f"{n:4} {line}" for line, n in counts.items()), sep="\n")
        print("the last one:", tracebacks[-1], sep="\n")


@pytest.fixture
def live_schema(live_server, request):
    # schemathesis 4.32's lazy schemas read and write `request.node._nodeid`, which pytest 9.2 no longer has
    # (its node ids are `_id` now); what it writes there only names the subtests' nodes, which pytest ignores
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    return schemathesis.openapi.from_url(f"{live_server.client.base_url}/openapi.json", config=_config())


schema = schemathesis.pytest.from_fixture("live_schema")


def _tracebacks(log: str) -> list[str]:
    """Each traceback in a server log, from the line logged before it through the exception's line."""
    found, block, before = [], None, ""
    for line in log.splitlines():
        if block is not None:
            block.append(line)
            if line and not line[0].isspace():
                found.append("\n".join(block))
                block = None
        elif line.startswith("Traceback"):
            block = [before, line]
        else:
            before = line
    return found


def _secured(case) -> bool:
    """Whether the operation declares a security requirement (the routes behind the API token)."""
    return any(True for _ in case.operation.security.iter_parameters())


@schema.parametrize()
def test_every_operation_answers_as_its_openapi_document_says(case):
    if _secured(case):
        case.call_and_validate(checks=CHECKS)  # the generated token: made up, malformed or missing
        case.call_and_validate(headers=AUTH, checks=CHECKS)
    else:
        case.call_and_validate(checks=CHECKS)


# edge values by JSON Schema type; a field of another type gets them too, where parsing or the 422's echo may fail
EDGES = {
    "number": [math.nan, math.inf, -math.inf, 10**30],
    "integer": [10**30, -(10**30), 2**63, math.nan, math.inf],
    "string": ["\ud800", "price \udfff", math.nan],
    "array": [["\ud800"], [math.nan], [10**30]],
    "object": [{"edge": math.nan}, {"edge": "\ud800"}, {"\udfff": 1}],
    "boolean": [math.nan],
}
PLAIN = {"number": 1.5, "integer": 1, "string": "x", "array": [], "object": {}, "boolean": True, None: "x"}


def test_edge_values_get_a_documented_answer(live_server):
    document = live_server.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_url(f"{live_server.client.base_url}/openapi.json", config=_config())
    failures, sent = [], 0
    for (path, method), what, data in _edge_requests(document):
        case = schema[path][method.upper()].Case(**data)
        sent += 1
        try:
            case.call_and_validate(headers=AUTH, checks=CHECKS)
        except (FailureGroup, OSError) as exc:  # OSError: what requests raises when the server does not answer
            failures.append(f"{method.upper()} {path} with {what}:\n{exc}")
    assert sent > 20  # the document still has the operations and fields this derives its requests from
    assert not failures, f"{len(failures)} of {sent} edge requests failed:\n\n" + "\n\n".join(failures)


def _edge_requests(document: dict):
    """((path, method), what, Case arguments) for each edge value the operations' parameters and bodies can take."""
    for path, methods in document["paths"].items():
        for method, spec in methods.items():
            params = [p for p in spec.get("parameters", []) if p["in"] == "path"]
            plain_path = {p["name"]: PLAIN[_kind(document, p["schema"])] for p in params}
            for param in params:
                if _kind(document, param["schema"]) == "integer":
                    for value in EDGES["integer"][:3]:  # NaN and Infinity have no spelling in a path
                        yield (
                            (path, method),
                            f"{param['name']}={value}",
                            {"path_parameters": {**plain_path, param["name"]: value}},
                        )
            body = spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is None:
                continue
            as_json = {"path_parameters": plain_path, "media_type": "application/json"}
            yield (path, method), "the body NaN", {**as_json, "body": b"NaN"}
            body = _resolve(document, body)
            fields = {name: _kind(document, field) for name, field in body.get("properties", {}).items()}
            plain = {name: PLAIN[fields[name]] for name in body.get("required", [])}
            if not fields:  # a free-form object
                for value in EDGES["object"]:
                    yield (path, method), f"the body {_spelled(value)}", {**as_json, "body": _encoded(value)}
            for name, kind in fields.items():
                for value in EDGES.get(kind, EDGES["string"]):
                    what = f"{name}={_spelled(value)}"
                    yield (path, method), what, {**as_json, "body": _encoded({**plain, name: value})}


def _resolve(document: dict, node: dict) -> dict:
    """A schema with its `$ref`s followed (local ones: FastAPI's are all under #/components/schemas)."""
    while "$ref" in node:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _kind(document: dict, node: dict) -> str | None:
    """The JSON Schema type of a field, the first that is not null; None when it names none."""
    node = _resolve(document, node)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is not None:
        return kind
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        kind = _kind(document, option)
        if kind not in (None, "null"):
            return kind
    return None


def _encoded(value) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python spells them; surrogates as \\u escapes


def _spelled(value) -> str:
    return json.dumps(value)
