"""Connections spread over the workers by how many each holds (service/front/balance.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from service.front.balance import FREE, ConnectionBoard
from tests.support.gunicorn_server import GunicornServer
from tests.support.photos import jpeg_bytes
from tests.support.server import start_gunicorn


def test_a_worker_accepts_only_while_no_other_holds_fewer() -> None:
    board = ConnectionBoard(3)
    first, second = board.claim(set()), board.claim({0})
    assert (first, second) == (0, 1)
    assert board.may_accept(first) and board.may_accept(second)  # 0 and 0: both may
    board.add(first, 1)
    assert not board.may_accept(first) and board.may_accept(second)
    board.add(second, 1)
    assert board.may_accept(first) and board.may_accept(second)
    board.add(second, 3)
    board.release(first)  # its worker died: only live workers count
    assert board.held(first) == FREE and board.may_accept(second)
    assert board.claim({1}) == 0 and board.held(0) == 0  # the slot is reused, empty
    assert board.claim({0, 1, 2}) is None


@pytest.fixture(scope="module")
def two_workers() -> Iterator[GunicornServer]:
    server = start_gunicorn({"WEB_CONCURRENCY": "2"})
    yield server
    server.stop()


def _held_per_worker(server: GunicornServer) -> list[int]:
    workers = psutil.Process(server.process.pid).children()
    return sorted(
        sum(
            1
            for c in worker.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
        )
        for worker in workers
    )


def test_keep_alive_clients_are_shared_by_both_workers(two_workers: GunicornServer) -> None:
    """Four persistent clients, connecting one after another: two on each worker (without
    the board the kernel often hands three or four to the same one)."""
    photo = jpeg_bytes(300, 200, seed=1)
    for _ in range(2):
        sessions = [requests.Session() for _ in range(4)]
        try:
            for session in sessions:
                response = session.post(
                    f"{two_workers.base_url}/predict",
                    data=photo,
                    headers={"Content-Type": "image/jpeg"},
                    timeout=30,
                )
                assert response.status_code == 200
            assert _held_per_worker(two_workers) == [2, 2]
        finally:
            for session in sessions:
                session.close()
        _wait_for(lambda: _held_per_worker(two_workers) == [0, 0])


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server did not close the connections"
        time.sleep(0.02)
