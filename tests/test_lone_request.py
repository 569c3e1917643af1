"""The lone-request rule: all cores only if faster alone and no slower at saturation."""

from __future__ import annotations

from benchmarks.lone_request import all_cores_pay


def test_all_cores_pay_only_without_losing_throughput_at_saturation() -> None:
    lone = {1: 10.8, 2: 7.6}
    assert all_cores_pay(lone, {1: 176.0, 2: 175.0}, cores=2)
    assert not all_cores_pay(lone, {1: 176.0, 2: 151.0}, cores=2)  # what this machine measures
    assert not all_cores_pay({1: 10.8, 2: 11.0}, {1: 176.0, 2: 180.0}, cores=2)  # not faster
