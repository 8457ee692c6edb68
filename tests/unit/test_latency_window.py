"""The bounded latency window of adapters._http: nearest-rank percentiles over the last N."""

from __future__ import annotations

import pytest

from adapters._http import EndpointState, LatencyWindow


def test_empty_window_has_no_percentiles() -> None:
    assert LatencyWindow().percentiles(50, 95, 99) == [None, None, None]


def test_nearest_rank_percentiles_in_milliseconds() -> None:
    window = LatencyWindow(size=1000)
    for ms in range(100, 0, -1):  # 1..100 ms, inserted out of order
        window.add(ms / 1000)
    assert len(window) == 100
    assert window.percentiles(50, 95, 99, 100) == [50.0, 95.0, 99.0, 100.0]


def test_single_sample_is_every_percentile() -> None:
    window = LatencyWindow()
    window.add(0.0123)
    assert window.percentiles(50, 99) == [12.3, 12.3]


def test_window_keeps_only_the_most_recent_calls() -> None:
    window = LatencyWindow(size=10)
    for _ in range(10):
        window.add(5.0)  # slow calls, later pushed out
    for ms in range(1, 11):
        window.add(ms / 1000)
    assert len(window) == 10
    assert window.percentiles(50, 100) == [5.0, 10.0]
    window.add(1.0)  # overwrites the oldest sample (1 ms)
    assert window.percentiles(10, 100) == [2.0, 1000.0]


def test_negative_durations_count_as_zero() -> None:
    window = LatencyWindow(size=2)
    window.add(-1.0)
    assert window.percentiles(50) == [0.0]


@pytest.mark.parametrize("q", [0, -1, 100.1])
def test_percentile_out_of_range(q: float) -> None:
    window = LatencyWindow()
    window.add(0.001)
    with pytest.raises(ValueError, match="percentile"):
        window.percentiles(q)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        LatencyWindow(size=0)


def test_endpoint_snapshot_reports_percentiles() -> None:
    st = EndpointState()
    assert st.snapshot()["p50_ms"] is None
    st.latency.add(0.2)
    snap = st.snapshot()
    assert (snap["p50_ms"], snap["p95_ms"], snap["p99_ms"]) == (200.0, 200.0, 200.0)
