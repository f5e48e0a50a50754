"""Helpers shared by the integration tests (real servers, real clients, 127.0.0.1)."""

from __future__ import annotations

import socket

import pytest

POLICIES = ["rr", "none", "reuseport"]


@pytest.fixture(params=POLICIES)
def policy(request) -> str:
    """Every integration scenario runs under each scheduling policy."""
    return request.param


@pytest.fixture
def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for servers that need an explicit port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
