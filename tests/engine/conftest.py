from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engine.servers import ChatServer


@pytest.fixture
def primary() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def secondary() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()
