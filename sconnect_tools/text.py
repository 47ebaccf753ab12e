"""Statistics about a piece of text: counts, average word length, most frequent words.

``stats(text)`` returns::

    {"characters": 44, "characters_no_spaces": 36, "words": 9, "lines": 1,
     "sentences": 2, "paragraphs": 1, "average_word_length": 4.0,
     "top_words": [["the", 2], ["brown", 1], ...]}

Definitions (heuristics, stated so the numbers can be checked by hand):

- characters: code points; characters_no_spaces leaves out all whitespace.
- words: runs of letters/digits/underscores, with inner apostrophes and hyphens kept
  (``don't``, ``well-known`` are one word each).
- lines: like ``wc -l`` but an unterminated last line counts too (``""`` has 0,
  ``"a"`` and ``"a\\n"`` have 1, ``"a\\nb"`` has 2).
- sentences: pieces ending in ``.``, ``!`` or ``?`` followed by whitespace or the end
  (so ``3.14`` does not end one); a paragraph break ends a sentence too, and a
  trailing piece without punctuation counts; only pieces containing a word count.
- paragraphs: blocks separated by one or more blank lines, ignoring empty ones.
- top_words: the five most frequent words, case-folded, most frequent first and ties
  alphabetical, as ``[word, count]`` pairs.

Error handling: a non-string or a text longer than 1,000,000 characters raises
``ValueError``. No I/O.
"""

from __future__ import annotations

import collections
import re

__all__ = ["stats"]

MAX_TEXT_CHARS = 1_000_000
TOP_WORDS = 5

_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")
# Sentence ends: terminal punctuation, optional closing quotes/brackets, then whitespace.
_SENTENCE_BREAK = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_HAS_WORD = re.compile(r"\w")


def stats(text: str) -> dict[str, object]:
    """Count characters, words, lines, sentences and paragraphs of ``text``."""
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}")
    words = _WORD.findall(text)
    counts = collections.Counter(word.casefold() for word in words)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]
    average = round(sum(len(word) for word in words) / len(words), 2) if words else 0.0
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    paragraphs = [piece for piece in _PARAGRAPH_BREAK.split(text) if piece.strip()]
    # A paragraph break ends a sentence even without punctuation (headings, lists).
    sentences = sum(
        1
        for paragraph in paragraphs
        for piece in _SENTENCE_BREAK.split(paragraph)
        if _HAS_WORD.search(piece)
    )
    return {
        "characters": len(text),
        "characters_no_spaces": sum(1 for char in text if not char.isspace()),
        "words": len(words),
        "lines": lines,
        "sentences": sentences,
        "paragraphs": len(paragraphs),
        "average_word_length": average,
        "top_words": [[word, count] for word, count in top],
    }
