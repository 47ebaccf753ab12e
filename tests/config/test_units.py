"""Durations and sizes parse strictly: a unit is required and nothing may be left over."""

from __future__ import annotations

import pytest

from engine.config.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), (" 10s ", 10.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 parsecs", "5", "s", "-1s", "5sec", "1e3s", "", "5s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [5, 5.0, True, None])
def test_durations_need_a_unit(value: object) -> None:
    with pytest.raises(ValueError, match="write the unit too"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "size"),
    [("64KiB", 65536), ("256MiB", 256 * 2**20), ("1GiB", 2**30), ("512B", 512), ("1.5KiB", 1536), ("2MB", 2_000_000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64 potatoes", "64", "lots", "64kib", "1.3B"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_formatting_round_trips() -> None:
    assert format_duration(parse_duration("2m")) == "2m"
    assert format_duration(0.5) == "500ms"
    assert format_size(parse_size("256MiB")) == "256MiB"
    assert format_size(1000) == "1000B"
