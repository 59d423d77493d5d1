"""Callback ids: unique UUIDs in time order, so the outbox index grows only at its end."""

from __future__ import annotations

import time
import uuid

from smsrelay.webhooks.payloads import new_callback_id


def test_a_callback_id_is_an_rfc_9562_version_7_uuid() -> None:
    text = new_callback_id()
    parsed = uuid.UUID(text)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == text  # the canonical form: lowercase, hyphens in place


def test_the_id_starts_with_the_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    millis = uuid.UUID(new_callback_id()).int >> 80
    after = time.time_ns() // 1_000_000
    assert before <= millis <= after


def test_ids_from_later_milliseconds_sort_after_earlier_ones() -> None:
    earlier = new_callback_id()
    start = time.monotonic_ns()
    while time.monotonic_ns() - start < 2_000_000:  # step past the millisecond (bounded: 2 ms)
        pass
    later = new_callback_id()
    assert earlier < later


def test_ids_are_unique_within_one_millisecond() -> None:
    ids = [new_callback_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
