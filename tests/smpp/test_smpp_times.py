import pytest

from smsrelay.smpp.times import MAX_RELATIVE_SECONDS, relative_seconds, relative_time


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (48 * 3600, "000002000000000R"),
        (1, "000000000001000R"),
        (90 * 60 + 5, "000000013005000R"),
        (MAX_RELATIVE_SECONDS, "000099235959000R"),
    ],
)
def test_relative_times_are_written_in_days_hours_minutes_seconds(seconds: int, text: str) -> None:
    assert relative_time(seconds) == text
    assert relative_seconds(text) == seconds


@pytest.mark.parametrize("seconds", [0, -1, MAX_RELATIVE_SECONDS + 1])
def test_a_relative_time_outside_what_the_form_can_say_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match="relative SMPP time"):
        relative_time(seconds)


def test_years_and_months_are_read_as_365_and_30_days() -> None:
    assert relative_seconds("010100000000000R") == (365 + 30) * 86400


@pytest.mark.parametrize("text", ["", "261206120000004+", "00000200000000R", "0000020000000x0R"])
def test_absolute_empty_or_malformed_times_are_not_relative(text: str) -> None:
    assert relative_seconds(text) is None
