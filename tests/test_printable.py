"""engine.printable: what a hostile string looks like once it reaches a terminal."""

from __future__ import annotations

from engine.printable import has_control, printable


def test_plain_text_is_unchanged() -> None:
    assert printable("alice ünïcode 42") == "alice ünïcode 42"
    assert not has_control("alice")


def test_ansi_escape_and_carriage_return_are_shown_not_obeyed() -> None:
    forged = "bob\x1b[2K\r2026-01-01 decision root-admin allow"
    shown = printable(forged)
    assert "\x1b" not in shown and "\r" not in shown
    assert shown.startswith("bob\\x1b[2K\\x0d2026")
    assert has_control(forged)


def test_newlines_escaped_unless_kept() -> None:
    assert printable("a\nb") == "a\\x0ab"
    assert printable("a\nb\tc\rd", keep_newlines=True) == "a\nb\tc\\x0dd"


def test_bidi_override_and_line_separator_are_escaped() -> None:
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert printable("x\u2028y") == "x\\u2028y"
    assert printable("\x85") == "\\x85"
