from __future__ import annotations

from pathlib import Path

import orjson

from api.app import create_app

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.json"


def render() -> bytes:
    return (
        orjson.dumps(create_app().openapi(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        + b"\n"
    )


def test_checked_in_openapi_is_current() -> None:
    assert OPENAPI.read_bytes() == render(), "openapi.json is stale: run `make openapi`"
