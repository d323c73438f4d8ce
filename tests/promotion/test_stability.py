"""The stability verdict: fail as soon as failure is certain, not before."""

from __future__ import annotations

import pytest

from promote_pipeline.promotion.models import StabilityMetrics
from promote_pipeline.promotion.stability import _verdict

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)


def _m(requests: int, errors: int = 0, db: int = 0, crashes: int = 0) -> StabilityMetrics:
    return StabilityMetrics(window_seconds=300, samples=requests, requests=requests, http_errors=errors,
                            http_error_rate=errors / max(requests, 1), db_connection_errors=db,
                            process_crashes=crashes, passed=True)


def test_one_error_early_in_a_long_window_is_not_yet_a_failure() -> None:
    assert _verdict(_m(10, errors=1), expected_requests=1200) is None


def test_errors_reaching_one_percent_of_the_window_fail_at_once() -> None:
    assert "error rate" in (_verdict(_m(40, errors=12), expected_requests=1200) or "")


def test_a_crash_or_a_database_error_fails_at_once() -> None:
    assert "crash" in (_verdict(_m(3, crashes=1), 1200) or "")
    assert "database" in (_verdict(_m(3, db=1), 1200) or "")
