"""The slow-client check: uploads trickling in must not stop a server answering everyone else.

    report = check_slow_clients("http://127.0.0.1:8000")   # raises AssertionError if not
    print(report.summary())

    python -m tests.support.slow_clients http://127.0.0.1:8000 [DURATION_S]

For ``duration_s`` it keeps ``connections`` sockets busy uploading a photo to ``POST /predict``
one byte every ``trickle_interval_s`` (a new one replaces each that the server cuts off),
while a normal client posts the whole photo every ``normal_interval_s`` (each request on its
own schedule, answered or not, as independent users would). It passes when every
normal request got 200 within ``max_latency_s`` and every trickling upload was cut off by the
server (a response such as 408, or a closed connection), within ``cut_off_within_s`` of its
start when given. ``measure_slow_clients`` runs the same scenario and only reports, for
servers expected to fail (e.g. sync workers without a buffering proxy).

It works against any base URL (a test gunicorn, a container), needs ``connections + ~10``
file descriptors (``raise_fd_limit``), and sends traffic to that URL only.
"""

from __future__ import annotations

import argparse
import math
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from tests.support.latency import nearest_rank
from tests.support.photos import jpeg_bytes

# A normal request not answered within this long counts as failed.
NORMAL_TIMEOUT_S = 10.0


@dataclass
class Trickle:
    """One trickling upload: how it ended and when (seconds after it connected)."""

    status: int | None = None  # the server's HTTP status, when it answered
    ended: str = "open"  # "answered", "closed", "reset" or "open" (still uploading at the end)
    after_s: float | None = None
    bytes_sent: int = 0


@dataclass
class SlowClientReport:
    duration_s: float
    max_latency_s: float
    cut_off_within_s: float | None
    normal: list[tuple[int | None, float]] = field(default_factory=list)  # (status, seconds)
    trickles: list[Trickle] = field(default_factory=list)

    @property
    def normal_latencies(self) -> list[float]:
        return sorted(seconds for _, seconds in self.normal)

    def percentile(self, q: float) -> float:
        return nearest_rank(self.normal_latencies, q)

    def problems(self) -> list[str]:
        found = []
        if not self.normal:
            found.append("no normal request was made")
        failed = [(s, round(t, 2)) for s, t in self.normal if s != 200]
        if failed:
            found.append(f"{len(failed)}/{len(self.normal)} normal requests failed: {failed[:5]}")
        slow = [round(t, 2) for s, t in self.normal if s == 200 and t > self.max_latency_s]
        if slow:
            found.append(
                f"{len(slow)}/{len(self.normal)} normal requests slower than "
                f"{self.max_latency_s:g} s: {slow[:5]}"
            )
        ended = [t for t in self.trickles if t.ended != "open"]
        if not ended:
            found.append("no trickling upload was cut off by the server")
        if self.cut_off_within_s is not None:
            late = [t for t in self.trickles if t.ended == "open" and t.after_s is not None]
            late += [t for t in ended if t.after_s > self.cut_off_within_s]
            if late:
                found.append(
                    f"{len(late)} trickling uploads not cut off within "
                    f"{self.cut_off_within_s:g} s: {late[:3]}"
                )
        return found

    def summary(self) -> str:
        ok = sum(1 for s, _ in self.normal if s == 200)
        by_end: dict[str, int] = {}
        for t in self.trickles:
            key = f"{t.ended} {t.status}" if t.status else t.ended
            by_end[key] = by_end.get(key, 0) + 1
        cut = sorted(t.after_s for t in self.trickles if t.ended != "open" and t.after_s)
        return (
            f"normal requests: {ok}/{len(self.normal)} answered 200, latency p50 "
            f"{self.percentile(50):.3f} s, p99 {self.percentile(99):.3f} s, max "
            f"{self.percentile(100):.3f} s; trickling uploads: {len(self.trickles)} "
            f"({', '.join(f'{n} {k}' for k, n in sorted(by_end.items()))}), cut off after "
            f"{cut[0] if cut else math.nan:.1f}-{cut[-1] if cut else math.nan:.1f} s"
        )


def raise_fd_limit(needed: int) -> bool:
    """Raise this process's open-file soft limit to ``needed`` if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return True
    if hard != resource.RLIM_INFINITY and hard < needed:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return True


def measure_slow_clients(
    base_url: str,
    photo: bytes | None = None,
    connections: int = 64,
    trickle_interval_s: float = 3.0,
    duration_s: float = 40.0,
    normal_interval_s: float = 1.0,
    max_latency_s: float = 2.0,
    cut_off_within_s: float | None = None,
) -> SlowClientReport:
    """Run the scenario and report what happened, without judging it."""
    photo = photo or jpeg_bytes(1024, 768, seed=11)
    if not raise_fd_limit(connections + 64):
        raise RuntimeError(f"cannot open {connections} sockets: the open-file limit is too low")
    report = SlowClientReport(duration_s, max_latency_s, cut_off_within_s)
    stop_at = time.monotonic() + duration_s
    trickler = threading.Thread(
        target=trickle_uploads,
        args=(base_url, photo, connections, trickle_interval_s, stop_at, report.trickles),
        daemon=True,
    )
    trickler.start()
    time.sleep(min(1.0, duration_s / 10))  # the trickling connections are open first
    _normal_client(base_url, photo, normal_interval_s, stop_at, report.normal)
    trickler.join(duration_s)
    return report


def check_slow_clients(base_url: str, **options: float | bytes | None) -> SlowClientReport:
    """``measure_slow_clients`` that raises AssertionError listing what went wrong."""
    report = measure_slow_clients(base_url, **options)  # type: ignore[arg-type]
    problems = report.problems()
    assert not problems, f"{report.summary()}\n" + "\n".join(problems)
    return report


def _normal_client(
    base_url: str,
    photo: bytes,
    interval_s: float,
    stop_at: float,
    results: list[tuple[int | None, float]],
) -> None:
    """A photo every ``interval_s`` whether or not earlier ones were answered (open loop)."""

    def one() -> None:
        started = time.monotonic()
        try:
            status: int | None = requests.post(
                f"{base_url}/predict", data=photo, headers=headers, timeout=NORMAL_TIMEOUT_S
            ).status_code
        except requests.RequestException:
            status = None
        with lock:
            results.append((status, time.monotonic() - started))

    headers = {"Content-Type": "image/jpeg"}
    lock = threading.Lock()
    senders = []
    next_at = time.monotonic()
    while next_at < stop_at:
        time.sleep(max(0.0, next_at - time.monotonic()))
        sender = threading.Thread(target=one, daemon=True)
        sender.start()
        senders.append(sender)
        next_at += interval_s
    for sender in senders:
        sender.join(NORMAL_TIMEOUT_S + 5)


@dataclass
class _Conn:
    sock: socket.socket
    trickle: Trickle
    started: float
    next_byte_at: float
    response: bytes = b""


def trickle_uploads(
    base_url: str,
    photo: bytes,
    connections: int,
    interval_s: float,
    stop_at: float,
    results: list[Trickle],
) -> None:
    """Keep ``connections`` uploads trickling until ``stop_at``, in one selector loop."""
    url = urlsplit(base_url)
    address = (url.hostname or "127.0.0.1", url.port or 80)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n"
    ).encode()
    selector = selectors.DefaultSelector()

    def connect() -> None:
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(head)
        sock.setblocking(False)
        now = time.monotonic()
        conn = _Conn(sock, Trickle(), now, now)
        results.append(conn.trickle)
        selector.register(sock, selectors.EVENT_READ, conn)

    def end(conn: _Conn, how: str) -> None:
        conn.trickle.ended = how
        conn.trickle.after_s = time.monotonic() - conn.started
        selector.unregister(conn.sock)
        conn.sock.close()
        if time.monotonic() + interval_s < stop_at:
            connect()  # the attack goes on: a new trickle replaces the one cut off

    for _ in range(connections):
        connect()
    while (now := time.monotonic()) < stop_at:
        for key in list(selector.get_map().values()):
            conn: _Conn = key.data
            if now >= conn.next_byte_at and conn.trickle.bytes_sent < len(photo):
                try:
                    sent = conn.sock.send(
                        photo[conn.trickle.bytes_sent : conn.trickle.bytes_sent + 1]
                    )
                    conn.trickle.bytes_sent += sent
                except OSError:
                    pass  # the server closed it; the read side below tells how
                conn.next_byte_at = now + interval_s
        for key, _ in selector.select(timeout=0.2):
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except ConnectionResetError:
                end(conn, "reset")
                continue
            except BlockingIOError:
                continue
            if data:
                conn.response += data
                if conn.trickle.status is None and b"\r\n" in conn.response:
                    conn.trickle.status = int(conn.response.split(b" ", 2)[1])
                continue
            end(conn, "answered" if conn.trickle.status else "closed")
    for key in list(selector.get_map().values()):
        conn = key.data
        if conn.trickle.status is not None:  # answered, the close did not arrive yet
            conn.trickle.ended = "answered"
            conn.trickle.after_s = time.monotonic() - conn.started
        key.fileobj.close()
    selector.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.slow_clients URL [DURATION_S]``: run it, print the summary."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.slow_clients",
        description="Trickling uploads beside a normal client against a running server.",
    )
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("duration_s", nargs="?", type=float, default=40.0, help="default 40")
    args = parser.parse_args(argv)
    report = measure_slow_clients(args.base_url, duration_s=args.duration_s)
    print(report.summary())
    for problem in report.problems():
        print(f"problem: {problem}")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    raise SystemExit(main())
