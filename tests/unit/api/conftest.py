"""Fixtures for API unit tests: the Litestar app over `FakeControl`, driven by Litestar's TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_control import TOKEN, FakeControl
from litestar.testing import TestClient

from pipelined.api import ApiSettings, create_app


@pytest.fixture
def fake() -> FakeControl:
    return FakeControl()


@pytest.fixture
def make_client(fake: FakeControl) -> Iterator[Callable[..., TestClient[Any]]]:
    clients: list[TestClient[Any]] = []

    def make(**settings: Any) -> TestClient[Any]:
        client: TestClient[Any] = TestClient(create_app(fake, ApiSettings(**settings)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    return make_client()


@pytest.fixture
def writer(make_client: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    """A client of an app with config writes switched on."""
    return make_client(config_write=True)


@pytest.fixture
def authed(make_client: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    """A client of an app with a token configured (requests carry no header unless given)."""
    return make_client(token=TOKEN)
