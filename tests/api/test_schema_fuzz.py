"""Schema fuzzing over the whole OpenAPI document (schemathesis), in process.

Every operation of the app's own document (read when this module is collected, so routes
added later are covered without touching this file) gets schemathesis's examples, coverage
and fuzzing phases, valid and invalid input, sent as a signed-in admin to one app that a
projection runner follows as the worker would. Every answer must be: no 5xx, a status the
operation documents, of the documented media type, with the documented headers and a body
that fits the documented schema; a required header left out is refused; a method the path
does not declare is a 405 with an `Allow` header.

Bounded and reproducible: `MAX_EXAMPLES` generated cases per operation on top of the
deterministic examples and coverage cases, derandomized, no example database.

Beside it, explicit checks of the answers the fuzzer cannot reach reliably: a 405's `Allow`
lists every method of the path (they may come from several routes), and a body over the
limit (413) or one that cannot be decoded (400) is a documented problem on every operation.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import schemathesis
import urllib3
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from api.app import create_app
from api.openapi import METHODS
from projections.runner import ProjectionRunner
from runtime.clock import FixedClock
from runtime.settings import ServiceTokenSpec, Settings
from services.bootstrap import Services, open_services
from tests.conftest import AUDITOR_TOKEN, ENGINE_TOKEN, PROP_READER_TOKEN
from tests.support.clones import make_admin
from tests.support.database import fresh_database
from tests.support.http import assert_problem
from tests.support.wallets import SignedIn

MAX_EXAMPLES = 5
BASE_URL = "http://testserver"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    missing_required_header,
    unsupported_method,
]

DOCUMENT: dict[str, Any] = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if method in METHODS
]
OPERATION_IDS = [f"{method} {path}" for method, path, _ in OPERATIONS]

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
SCHEMA.config.phases.update(phases=["examples", "coverage", "fuzzing"])
SCHEMA.config.generation.update(modes=list(schemathesis.GenerationMode), max_examples=MAX_EXAMPLES)


class ThroughTestClient(requests.adapters.HTTPAdapter):
    """A `requests` adapter that hands each request to a `TestClient`: schemathesis sends
    through its own `requests` path (`case.call`), and the app is reached in process on the
    event loop its lifespan opened (the async read pool lives there), never over a socket."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        # Header values travel as latin-1 octets, as `requests` would send them on a socket.
        headers = [
            (name, value.encode("latin-1") if isinstance(value, str) else value)
            for name, value in request.headers.items()
        ]
        answer = self.client.request(
            request.method or "GET", request.url or "", headers=headers, content=request.body
        )
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=answer.headers.multi_items(),
            status=answer.status_code,
            reason=answer.reason_phrase,
            version=11,
            preload_content=False,
        )
        return self.build_response(request, raw)


@dataclass
class Target:
    client: TestClient
    session: requests.Session
    services: Services
    admin: SignedIn


@pytest.fixture(scope="module")
def target(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One app for the whole run (state builds up: later operations meet what earlier ones
    made), with a projection runner following the log, so reads that wait for a position
    are answered as in production rather than timing out."""
    clock = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    with fresh_database(postgres_url) as url:
        settings = Settings(
            database_url=url,
            data_dir=tmp_path_factory.mktemp("fuzz"),
            read_wait_timeout=0.5,
            service_tokens=[
                ServiceTokenSpec(name="auditor", scopes=["audit:read"], secrets=[AUDITOR_TOKEN]),
                ServiceTokenSpec(name="engine", scopes=["prop:write"], secrets=[ENGINE_TOKEN]),
                ServiceTokenSpec(
                    name="prop-reader", scopes=["prop:read"], secrets=[PROP_READER_TOKEN]
                ),
            ],
        )
        services = open_services(settings, run_migrations=False, clock=clock)
        stop = threading.Event()
        runner = ProjectionRunner(services.projections, None, services.url)
        follower = threading.Thread(target=runner.run, args=(stop,), kwargs={"idle_wait": 0.2})
        try:
            with TestClient(create_app(services=services, clock=clock)) as client:
                admin = make_admin(client, services)
                follower.start()
                session = requests.Session()
                adapter = ThroughTestClient(client)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                yield Target(client, session, services, admin)
        finally:
            stop.set()
            if follower.is_alive():
                follower.join(timeout=10)
            services.close()


@SCHEMA.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_every_operation_answers_as_documented(case: schemathesis.Case, target: Target) -> None:
    case.call_and_validate(
        base_url=BASE_URL, session=target.session, headers=target.admin.headers, checks=CHECKS
    )


# --- the explicit checks ---------------------------------------------------------------------

SOME_ID = "00000000-0000-4000-8000-00000000f022"


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", SOME_ID, path)


def methods_at(url: str) -> set[str]:
    """Every method the document declares for a path template that `url` matches."""
    methods: set[str] = set()
    for path, item in DOCUMENT["paths"].items():
        pattern = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}]+\})", path)
        )
        if re.fullmatch(pattern, url):
            methods |= {method.upper() for method in item if method in METHODS}
    return methods


def test_a_405_allows_every_method_of_the_path(target: Target) -> None:
    """`GET` and `POST /v1/clones` are two routes: a `DELETE` must still name both."""
    response = target.client.delete("/v1/clones", headers=target.admin.headers)

    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("path", sorted(DOCUMENT["paths"]))
def test_every_path_answers_an_undeclared_method_with_its_allow_list(
    target: Target, path: str
) -> None:
    url = concrete(path)
    allowed = methods_at(url)
    for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - allowed):
        response = target.client.request(method, url, headers=target.admin.headers)

        assert_problem(response, 405, "method-not-allowed")
        assert response.headers["allow"] == ", ".join(sorted(allowed)), (method, url)


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_body_faults_are_documented_problems(
    target: Target, method: str, path: str, operation: dict[str, Any]
) -> None:
    settings = target.services.settings
    too_large = b"x" * (max(settings.max_body_bytes, settings.max_draft_body_bytes) + 1)
    json = {**target.admin.headers, "Content-Type": "application/json"}

    response = target.client.request(method, concrete(path), headers=json, content=too_large)

    assert_problem(response, 413, "payload-too-large")
    assert "413" in operation["responses"]
    if "requestBody" in operation:
        response = target.client.request(method, concrete(path), headers=json, content=b"\xff{")

        assert_problem(response, 400, "malformed-body")
        assert "400" in operation["responses"]
