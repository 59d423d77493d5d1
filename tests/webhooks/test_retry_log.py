"""RetryDigest: failed attempts as one line a minute per receiver."""

from smsrelay.webhooks import retry_log
from smsrelay.webhooks.retry_log import RetryDigest

LAST = {"status": 500, "error": "HTTP 500"}


def test_the_first_failure_is_a_line_then_one_line_a_minute_counts_what_failed_since() -> None:
    digest = RetryDigest(every=60.0)
    first = digest.add("a:80", 1, 1000.0, LAST)
    assert first == {"host": "a:80", "failed_attempts": 1, "callbacks": 1, "seconds": 0} | LAST
    for second in range(1, 60):  # 59 more attempts of 3 callbacks within the minute: quiet
        assert digest.add("a:80", second % 3, 1000.0 + second, LAST) is None
    line = digest.add("a:80", 7, 1060.0, {"status": None, "error": "connection failed"})
    assert line == {
        "host": "a:80",
        "failed_attempts": 60,
        "callbacks": 4,
        "seconds": 60,
        "status": None,
        "error": "connection failed",
    }
    assert digest.add("a:80", 7, 1061.0, LAST) is None  # the next minute starts there


def test_receivers_are_counted_apart() -> None:
    digest = RetryDigest(every=60.0)
    assert digest.add("a:80", 1, 0.0, LAST) is not None
    assert digest.add("b:80", 2, 1.0, LAST) is not None  # its own first failure
    assert digest.add("a:80", 1, 2.0, LAST) is None


def test_past_its_limit_it_forgets_quiet_receivers_first(monkeypatch) -> None:
    monkeypatch.setattr(retry_log, "MAX_HOSTS", 3)
    digest = RetryDigest(every=60.0)
    for index, host in enumerate(("old:1", "old:2", "busy:3")):
        digest.add(host, index, 0.0 if host.startswith("old") else 100.0, LAST)
    assert digest.add("new:4", 9, 120.0, LAST) is not None
    assert digest.add("busy:3", 3, 121.0, LAST) is None  # still remembered: within its minute
    assert digest.add("old:1", 1, 122.0, LAST) is not None  # forgotten: a first line again
