"""Tests for sconnect_tools.clock."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from sconnect_tools import clock


def test_utc_by_default() -> None:
    before = int(time.time())
    result = clock.now()
    after = int(time.time())
    assert result["timezone"] == "UTC"
    assert before <= result["unix"] <= after
    parsed = dt.datetime.fromisoformat(result["iso"])
    assert parsed.utcoffset() == dt.timedelta(0)
    assert int(parsed.timestamp()) == result["unix"]
    assert result["weekday"] == parsed.strftime("%A")
    assert result["utc_offset"] == "+00:00"


def test_named_zone_agrees_with_unix_time() -> None:
    result = clock.now("Asia/Kolkata")  # +05:30 all year, no DST
    parsed = dt.datetime.fromisoformat(result["iso"])
    assert result["timezone"] == "Asia/Kolkata"
    assert parsed.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert result["utc_offset"] == "+05:30"
    assert int(parsed.timestamp()) == result["unix"]
    assert result["weekday"] in {
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    }


def test_case_insensitive_zone_name_is_canonicalised() -> None:
    assert clock.now("europe/berlin")["timezone"] == "Europe/Berlin"


def test_unknown_zone_suggests_spelling() -> None:
    with pytest.raises(ValueError, match=r"unknown timezone 'Europe/Berln'.*Europe/Berlin.*IANA"):
        clock.now("Europe/Berln")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "Mars/Olympus_Mons", "", " ", 5, "x" * 500])
def test_bad_zones_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="IANA time zone name"):
        clock.now(bad)  # type: ignore[arg-type]


def test_runs_in_sandbox_python(run_tool) -> None:
    ok = run_tool("clock", "now", {"timezone": "America/New_York"})
    assert ok.returncode == 0, ok.stderr
    assert ok.result["timezone"] == "America/New_York"
    assert set(ok.result) >= {"iso", "timezone", "unix", "weekday"}
    bad = run_tool("clock", "now", {"timezone": "Nowhere/Atall"})
    assert bad.returncode == 1
    assert "ValueError: unknown timezone 'Nowhere/Atall'" in bad.stderr
