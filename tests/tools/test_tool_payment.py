"""Tests for sconnect_tools.payment: the ledger and its validation."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from sconnect_tools import payment


@pytest.fixture(autouse=True)
def _in_workspace(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _ledger(tmp_path: pathlib.Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "payments.jsonl").read_text().splitlines()]


def test_records_payments_in_the_ledger(tmp_path: pathlib.Path) -> None:
    first = payment.send("  ACME GmbH ", 120.5, "eur", "invoice 42\nthanks")
    second = payment.send("Bob", 3)
    assert first["payment_id"].startswith("pay_")
    assert first["payment_id"] != second["payment_id"]
    assert {k: first[k] for k in ("recipient", "amount", "currency", "status", "ledger")} == {
        "recipient": "ACME GmbH",
        "amount": 120.5,
        "currency": "EUR",
        "status": "recorded",
        "ledger": "payments.jsonl",
    }
    assert second["currency"] == "EUR" and second["memo"] == ""
    lines = _ledger(tmp_path)
    assert lines == [
        {k: v for k, v in first.items() if k != "ledger"},
        {k: v for k, v in second.items() if k != "ledger"},
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recipient": "", "amount": 1}, "recipient must be a non-empty"),
        ({"recipient": "   ", "amount": 1}, "recipient must be a non-empty"),
        ({"recipient": None, "amount": 1}, "recipient must be a non-empty"),
        ({"recipient": "x" * 201, "amount": 1}, "longer than 200"),
        ({"recipient": "a\nb", "amount": 1}, "control characters"),
        ({"recipient": "Bob", "amount": 0}, "greater than 0"),
        ({"recipient": "Bob", "amount": -5}, "greater than 0"),
        ({"recipient": "Bob", "amount": 10000.01}, "at most 10000"),
        ({"recipient": "Bob", "amount": 1.005}, "two decimal places"),
        ({"recipient": "Bob", "amount": float("nan")}, "finite"),
        ({"recipient": "Bob", "amount": float("inf")}, "finite"),
        ({"recipient": "Bob", "amount": True}, "must be a number"),
        ({"recipient": "Bob", "amount": "10"}, "must be a number"),
        ({"recipient": "Bob", "amount": 1, "currency": "EURO"}, "three-letter code"),
        ({"recipient": "Bob", "amount": 1, "currency": "E1R"}, "three-letter code"),
        ({"recipient": "Bob", "amount": 1, "currency": "ÉUR"}, "three-letter code"),
        ({"recipient": "Bob", "amount": 1, "currency": 978}, "three-letter code"),
        ({"recipient": "Bob", "amount": 1, "memo": "m" * 501}, "longer than 500"),
        ({"recipient": "Bob", "amount": 1, "memo": "a\x1bb"}, "control characters"),
        ({"recipient": "Bob", "amount": 1, "memo": None}, "memo must be a string"),
    ],
)
def test_refuses_bad_payments(
    tmp_path: pathlib.Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        payment.send(**kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "payments.jsonl").exists()


def test_limits_are_inclusive() -> None:
    assert payment.send("Bob", 10000)["amount"] == 10000
    assert payment.send("Bob", 0.01)["amount"] == 0.01


def test_refuses_a_ledger_that_points_elsewhere(tmp_path: pathlib.Path) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    os.symlink(elsewhere, tmp_path / "payments.jsonl")
    with pytest.raises(PermissionError, match="not a regular file"):
        payment.send("Bob", 1)
    os.remove(tmp_path / "payments.jsonl")
    os.link(elsewhere, tmp_path / "payments.jsonl")
    with pytest.raises(PermissionError, match="singly linked"):
        payment.send("Bob", 1)
    assert elsewhere.read_text() == ""


def test_runs_in_sandbox_python(run_tool, tmp_path: pathlib.Path) -> None:
    ok = run_tool("payment", "send", {"recipient": "Carol", "amount": 19.99, "currency": "usd"})
    assert ok.returncode == 0, ok.stderr
    assert ok.result["status"] == "recorded"
    assert ok.result["currency"] == "USD"
    assert _ledger(tmp_path)[0]["payment_id"] == ok.result["payment_id"]
    refused = run_tool("payment", "send", {"recipient": "Carol", "amount": 1e9})
    assert refused.returncode == 1
    assert refused.stderr.startswith("ValueError: amount must be at most 10000")
    assert len(_ledger(tmp_path)) == 1
