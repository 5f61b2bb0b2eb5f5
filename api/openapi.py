"""The OpenAPI document: FastAPI's own, with every problem answer documented in one place.

Routes do not list the errors they share; `document_problems` adds them to every operation
when the document is generated (`install_openapi`), so a route added later is documented
like the others without a copy of its own:

- every operation: 401 and 403 (credentials and roles), 404, 409, 413 (the body limit of
  `api.limits` reads `Content-Length` on every request, whatever its method), 422 (bad
  parameters or body), 429 (rate limits) and 503 (a read that waited for a log position in
  vain, or too many such reads; `api.deps`);
- an operation that takes a body: 400 too, a body that cannot be decoded at all (not UTF-8,
  say: FastAPI's "error parsing the body"); well-formed JSON that does not fit is a 422.

Every 4xx and 5xx response, one a route declares itself too (a 402 with its own
description), is `application/problem+json` with the `Problem` schema, which is what
`api.problems` sends. A 405 is an answer about a path rather than an operation: it is not in
the document, and its `Allow` header lists every method of the path (`api.problems`).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from fastapi import FastAPI

from api.problems import PROBLEM_MEDIA_TYPE, Problem

COMPONENTS = "#/components/schemas/"

COMMON: dict[int, str] = {
    401: "no valid credentials (`unauthenticated`)",
    403: "the caller may not do this (`forbidden`)",
    404: "no such resource, or not the caller's (`not-found`)",
    409: "a conflict with the current state, or a log position not reached (`position-beyond-head`)",
    413: "the request body is over the limit (`payload-too-large`)",
    422: "the request is not valid (`invalid-request`, or the rule it breaks)",
    429: "too many requests (`rate-limited`)",
    503: "a read model is behind, or too many reads wait (`projection-behind`, `too-many-waits`)",
}
"""What any operation may answer, documented on every one."""

WITH_BODY: dict[int, str] = {
    400: "the request body cannot be parsed (`malformed-body`)",
}
"""What an operation that takes a body may answer besides."""

METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

# FastAPI's own 422, added to each operation with parameters; its schema is not what we send.
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` answer the document with the problem responses added."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Add the shared problem responses to every operation of `document` (in place)."""
    problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": COMPONENTS + "Problem"}}}
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            shared = COMMON | (WITH_BODY if "requestBody" in operation else {})
            for status, description in shared.items():
                declared = responses.get(str(status))
                if declared is None or _fastapi_validation(declared):
                    responses[str(status)] = {"description": description}
            for code, response in responses.items():
                if code[:1] in ("4", "5"):
                    response["content"] = copy.deepcopy(problem)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template=COMPONENTS + "{model}")
    for name in FASTAPI_VALIDATION:
        if name in schemas and not _referenced(document, name):
            del schemas[name]
    return document


def _fastapi_validation(response: dict[str, Any]) -> bool:
    return (COMPONENTS + FASTAPI_VALIDATION[0]).encode() in orjson.dumps(response)


def _referenced(document: dict[str, Any], name: str) -> bool:
    """Whether anything in `document` but the schema `name` itself refers to it."""
    schemas = document["components"]["schemas"]
    others = {key: value for key, value in schemas.items() if key != name}
    rest = {**document, "components": {**document["components"], "schemas": others}}
    return f'"{COMPONENTS}{name}"'.encode() in orjson.dumps(rest)
