"""Tests for sconnect_tools.text."""

from __future__ import annotations

import pytest

from sconnect_tools import text


def test_counts_a_small_text() -> None:
    sample = (
        "The quick brown fox jumps over the lazy dog. Don't stop!\n"
        "Pi is 3.14 roughly? Yes\n"
        "\n"
        "A well-known second paragraph.\n"
    )
    result = text.stats(sample)
    assert result["characters"] == len(sample)
    assert result["characters_no_spaces"] == len("".join(sample.split()))
    # The quick brown fox jumps over the lazy dog Don't stop Pi is 3 14 roughly Yes
    # A well-known second paragraph  -> "3.14" splits into two words at the dot
    assert result["words"] == 21
    assert result["lines"] == 4
    assert result["sentences"] == 5
    assert result["paragraphs"] == 2
    assert result["top_words"][0] == ["the", 2]
    assert len(result["top_words"]) == 5
    assert ["don't", 1] in text.stats("don't")["top_words"]
    assert ["well-known", 1] in text.stats("well-known")["top_words"]


def test_top_words_are_case_folded_and_ties_alphabetical() -> None:
    result = text.stats("b a B c A b d e f")
    assert result["top_words"] == [["b", 3], ["a", 2], ["c", 1], ["d", 1], ["e", 1]]


def test_average_word_length() -> None:
    assert text.stats("ab abcd")["average_word_length"] == 3.0
    assert text.stats("a bb bb")["average_word_length"] == 1.67


@pytest.mark.parametrize(
    ("sample", "lines", "sentences", "paragraphs"),
    [
        ("", 0, 0, 0),
        ("   \n\n  ", 3, 0, 0),
        ("one", 1, 1, 1),
        ("one\n", 1, 1, 1),
        ("one\ntwo", 2, 1, 1),
        ('Hi. "Quoted." Done', 1, 3, 1),
        ("First.\n\n\n\nSecond.", 5, 2, 2),
        ("Wait... what?!", 1, 2, 1),
    ],
)
def test_lines_sentences_paragraphs(
    sample: str, lines: int, sentences: int, paragraphs: int
) -> None:
    result = text.stats(sample)
    assert (result["lines"], result["sentences"], result["paragraphs"]) == (
        lines,
        sentences,
        paragraphs,
    )


def test_unicode_words() -> None:
    result = text.stats("Straße STRASSE über Über")
    assert result["words"] == 4
    assert result["top_words"][0] == ["strasse", 2]  # casefold, not lower
    assert result["top_words"][1] == ["über", 2]


def test_refuses_huge_or_non_string_input() -> None:
    with pytest.raises(ValueError, match="limit is 1,000,000"):
        text.stats("a" * 1_000_001)
    with pytest.raises(ValueError, match="must be a string"):
        text.stats(None)  # type: ignore[arg-type]


def test_runs_in_sandbox_python(run_tool) -> None:
    ok = run_tool("text", "stats", {"text": "Hello world. Hello again!"})
    assert ok.returncode == 0, ok.stderr
    assert ok.result["words"] == 4
    assert ok.result["sentences"] == 2
    assert ok.result["top_words"][0] == ["hello", 2]
    bad = run_tool("text", "stats", {"text": 42})
    assert bad.returncode == 1 and "ValueError" in bad.stderr
