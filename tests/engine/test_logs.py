"""JSON log lines: one object per line, with the call's extra fields and any traceback."""

from __future__ import annotations

import json
import logging

from engine.logs import JsonFormatter


def test_json_lines_carry_extras_and_exceptions() -> None:
    record = logging.LogRecord("engine.test", logging.WARNING, __file__, 1, "refused %s", ("alice",), None)
    record.reason = "expired"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"], line["reason"]) == (
        "warning", "engine.test", "refused alice", "expired")
    assert line["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("engine.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


def test_client_chosen_control_characters_are_shown_escaped() -> None:
    from engine.logs import TextFormatter

    record = logging.LogRecord("engine.test", logging.WARNING, __file__, 1, "refused %s",
                               ("evil\x1b[2J\r\n2025-01-01 INFO forged line",), None)
    text = TextFormatter().format(record)
    assert "\x1b" not in text and "\n" not in text and "\r" not in text
    assert text.endswith("refused evil\\x1b[2J\\x0d\\x0a2025-01-01 INFO forged line")
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"].startswith("refused evil\\x1b[2J")
