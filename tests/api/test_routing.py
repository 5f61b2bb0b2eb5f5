"""Our routers (`api.routing`): a plain `def` endpoint runs in one thread hop with its
answer validated on the event loop, and a router turns away a path none of its routes can
match without trying them, while 404, 405, path parameters and streams answer as before."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.routing import Match

from api.app import ROUTERS
from api.routing import APIRouter, OneHopRoute


class Answer(BaseModel):
    item: int
    thread: str


def small_app() -> tuple[FastAPI, APIRouter, APIRouter]:
    items = APIRouter(prefix="/v1/items")
    orders = APIRouter(prefix="/v1/orders")

    @items.get("/{item}")
    def get_item(item: int) -> Answer:
        return Answer(item=item, thread=threading.current_thread().name)

    @items.get("/{item}/lines")
    async def lines(item: int) -> AsyncIterator[str]:
        for n in range(3):
            yield f"{item}.{n}"

    @orders.post("")
    def place_order() -> dict[str, str]:
        return {"thread": threading.current_thread().name}

    app = FastAPI()
    app.include_router(items)
    app.include_router(orders)
    return app, items, orders


def routes_of(router: APIRouter) -> Iterator[OneHopRoute]:
    for route in router.routes:
        assert isinstance(route, OneHopRoute)
        yield route


def test_a_plain_endpoint_is_awaited_and_a_stream_is_left_as_it_is() -> None:
    _, items, orders = small_app()

    by_path = {route.path: route for route in routes_of(items)}
    assert inspect.iscoroutinefunction(by_path["/v1/items/{item}"].endpoint)
    assert inspect.isasyncgenfunction(by_path["/v1/items/{item}/lines"].endpoint)
    assert all(inspect.iscoroutinefunction(route.endpoint) for route in routes_of(orders))


def test_a_plain_endpoint_runs_off_the_event_loop_and_its_answer_is_validated() -> None:
    app, _, _ = small_app()
    with TestClient(app) as client:
        answer = client.get("/v1/items/7")
        refused = client.get("/v1/items/seven")

    assert answer.status_code == 200
    assert answer.json()["item"] == 7
    assert answer.json()["thread"] != threading.main_thread().name
    assert refused.status_code == 422


def test_paths_outside_a_router_are_turned_away_and_the_rest_answer_as_before() -> None:
    app, items, orders = small_app()
    with TestClient(app) as client:
        streamed = client.get("/v1/items/3/lines")
        placed = client.post("/v1/orders")
        wrong_method = client.get("/v1/orders")
        unknown = client.get("/v1/nothing")

    assert [json.loads(line) for line in streamed.text.splitlines()] == ["3.0", "3.1", "3.2"]
    assert placed.status_code == 200
    assert wrong_method.status_code == 405
    assert unknown.status_code == 404
    assert items.literal_starts() == ("/v1/items/",)
    assert orders.literal_starts() == ("/v1/orders",)


def scope_of(path: str) -> dict[str, object]:
    return {"type": "http", "path": path, "root_path": "", "method": "GET"}


def test_the_literal_starts_follow_routes_added_later() -> None:
    router = APIRouter()

    @router.get("/v1/items")
    def first() -> None:
        return None

    assert router.literal_starts() == ("/v1/items",)
    assert router.matches(scope_of("/v2/items"))[0] == Match.NONE

    @router.get("/v2/items")
    def second() -> None:
        return None

    assert router.literal_starts() == ("/v1/items", "/v2/items")
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/v2/items").status_code == 200


def test_a_router_without_a_prefix_turns_away_paths_none_of_its_routes_begins() -> None:
    router = APIRouter()

    @router.get("/v1/me")
    def me() -> str:
        return "me"

    @router.get("/v1/users/{user_id}/profile")
    def profile(user_id: int) -> str:
        return f"profile {user_id}"

    @router.get("/v1/users/{user_id}")
    def user(user_id: int) -> str:
        return f"user {user_id}"

    assert router.literal_starts() == ("/v1/me", "/v1/users/")
    assert router.matches(scope_of("/v1/health"))[0] == Match.NONE
    assert router.matches(scope_of("/v1/users"))[0] == Match.NONE
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/v1/users/7/profile").json() == "profile 7"
        assert client.get("/v1/users/7").json() == "user 7"
        assert client.get("/v1/me").json() == "me"
        assert client.get("/v1/users").status_code == 404


def test_every_router_of_the_service_is_ours() -> None:
    assert ROUTERS
    assert all(isinstance(router, APIRouter) for router in ROUTERS)
    assert all(isinstance(route, OneHopRoute) for r in ROUTERS for route in r.routes)
