"""RetryDigest: failed attempts as one line a minute per receiver."""

from smsrelay.webhooks import retry_log
from smsrelay.webhooks.retry_log import RetryDigest

LAST = {"status": 500, "error": "HTTP 500"}
REFUSED = {"status": None, "error": "connection failed"}


def test_the_first_failure_is_a_line_then_one_line_a_minute_counts_what_failed_since() -> None:
    digest = RetryDigest(every=60.0)
    [first] = digest.add("a:80", 1, 1000.0, LAST)
    assert first == {"host": "a:80", "failed_attempts": 1, "callbacks": 1, "seconds": 0} | LAST
    for second in range(1, 60):  # 59 more attempts of 3 callbacks within the minute: quiet
        assert digest.add("a:80", second % 3, 1000.0 + second, LAST) == []
    [line] = digest.add("a:80", 7, 1060.0, REFUSED)
    assert line == {"host": "a:80", "failed_attempts": 60, "callbacks": 4, "seconds": 60} | REFUSED
    assert digest.add("a:80", 7, 1061.0, LAST) == []  # the next minute starts there


def test_failures_after_a_bursts_last_line_are_said_with_their_own_error_when_it_fails_again() -> (
    None
):
    # They waited for the next failure, which an hour later said "50,000 attempts in 3,600 s"
    # with its own, new error.
    digest = RetryDigest(every=60.0)
    digest.add("a:80", 1, 0.0, LAST)
    for n in range(1, 50):
        digest.add("a:80", n, n / 10, LAST)  # within 5 s
    earlier, first = digest.add("a:80", 99, 3600.0, REFUSED)
    assert earlier == {"host": "a:80", "failed_attempts": 49, "callbacks": 49, "seconds": 5} | LAST
    assert first == {"host": "a:80", "failed_attempts": 1, "callbacks": 1, "seconds": 0} | REFUSED


def test_receivers_are_counted_apart() -> None:
    digest = RetryDigest(every=60.0)
    assert digest.add("a:80", 1, 0.0, LAST)
    assert digest.add("b:80", 2, 1.0, LAST)  # its own first failure
    assert digest.add("a:80", 1, 2.0, LAST) == []


def test_memory_is_bounded_in_receivers_and_in_callbacks_per_line(monkeypatch) -> None:
    monkeypatch.setattr(retry_log, "MAX_HOSTS", 3)
    monkeypatch.setattr(retry_log, "MAX_IDS", 5)
    digest = RetryDigest(every=60.0)
    for index, host in enumerate(("old:1", "old:2", "busy:3")):
        digest.add(host, index, 0.0 if host.startswith("old") else 100.0, LAST)
    assert digest.add("new:4", 9, 120.0, LAST)
    assert digest.add("busy:3", 3, 121.0, LAST) == []  # still remembered: within its minute
    assert digest.add("old:1", 1, 122.0, LAST)  # forgotten: a first line again
    for n in range(100):
        digest.add("busy:3", n, 122.0, LAST)
    [line] = digest.add("busy:3", 1000, 161.0, LAST)
    assert line["failed_attempts"] == 102 and line["callbacks"] == 5  # at least 5
