"""Undoing the spellings people use to slip text past a classifier, before it is judged.

The encoder reads WordPiece tokens of English text: "b o m b", "b0mb" and "bоmb" (a Cyrillic "о")
are three strings it has never seen together with "bomb", so an obfuscated request reads as noise
and passes. Normalising first is cheaper and surer than hoping training covered every spelling:

* Unicode compatibility forms (NFKC: full-width letters, ligatures) and invisible format
  characters (zero-width spaces and joiners, soft hyphens) go.
* Cyrillic and Greek letters that look like Latin ones become Latin, in words that already mix
  them with Latin letters, or everywhere in a text that is mostly Latin. A Russian or Greek text
  (mostly its own script) is left as it is.
* Letters spelled out one at a time ("b o m b", "b.o.m.b", "b-o-m-b") are joined; a whole text
  written so ("G i v e   m e") keeps its wider gaps as the breaks between words.
* Digits and symbols standing for letters inside a word ("m3th", "h4ck", "$teal") become letters;
  a token that is a number ("2024", "3.5") or has too few letters ("4x4", "mp3") stays, unless
  the whole text is written that way (a third of its words mix letters and such digits).

Ordinary text comes out unchanged but for its compatibility forms (tested), so this costs nothing
in false positives; the verdict is on the normalised text, which is what a reader would understand.
"""

from __future__ import annotations

import re
import unicodedata

_LOOKALIKES = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "һ": "h",
        "ӏ": "l",
        "ԛ": "q",
        "ԝ": "w",
        "к": "k",
        "м": "m",
        "т": "t",
        "в": "b",
        "н": "h",
        "г": "r",
        "А": "A",
        "В": "B",
        "Е": "E",
        "К": "K",
        "М": "M",
        "Н": "H",
        "О": "O",
        "Р": "P",
        "С": "C",
        "Т": "T",
        "Х": "X",
        "У": "Y",
        "І": "I",
        "Ј": "J",
        "Ѕ": "S",
        # Greek
        "α": "a",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "ν": "v",
        "κ": "k",
        "ι": "i",
        "ε": "e",
        "Α": "A",
        "Β": "B",
        "Ε": "E",
        "Ζ": "Z",
        "Η": "H",
        "Ι": "I",
        "Κ": "K",
        "Μ": "M",
        "Ν": "N",
        "Ο": "O",
        "Ρ": "P",
        "Τ": "T",
        "Υ": "Y",
        "Χ": "X",
    }
)
_LOOKALIKE_CHARS = frozenset(chr(c) for c in _LOOKALIKES)
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "9": "g", "@": "a", "$": "s"}
)
_LEET_CHARS = frozenset("0134579@$")

_LETTER = r"[^\W\d_]"
_SPELLED = re.compile(rf"(?<!\w)(?:{_LETTER}[ .\-_*]){{2,}}{_LETTER}(?!\w)")
_SPELLED_SEPARATORS = re.compile(r"[ .\-_*]")
_TOKEN = re.compile(r"[\w@$]+")
# A token with a digit or symbol that may stand for a letter: the only tokens leetspeak touches.
# The lookbehind anchors it at a token's start and the lookahead reads the token once, so a long
# run of word characters costs linear time.
_LEET_TOKEN = re.compile(r"(?<![\w@$])(?=[\w@$]*[0134579@$])[\w@$]+")
# Addresses keep their digits and "@": they are not disguised words.
_ADDRESS = re.compile(r"\S+@\S+\.\w+|\w+://\S+|www\.\S+")
_WORD_RUN = re.compile(r"\S+")
# An address lies within one run of non-space characters. _ADDRESS backtracks quadratically in
# the length of a run, so it reads only runs that could hold one and are no longer than this.
_MAX_ADDRESS_CHARS = 2048


def _is_latin(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _fix_lookalikes(text: str) -> str:
    if text.isascii():  # every lookalike is a Cyrillic or Greek letter
        return text
    letters = [c for c in text if c.isalpha()]
    latin = sum(_is_latin(c) for c in letters)
    lookalike = sum(c in _LOOKALIKE_CHARS for c in letters)
    if not lookalike:
        return text
    if letters and (latin + lookalike) / len(letters) > 0.9 and latin >= lookalike:
        return text.translate(_LOOKALIKES)
    # A mostly non-Latin text: only words that mix scripts are disguised Latin words.
    return _TOKEN.sub(
        lambda m: m.group().translate(_LOOKALIKES) if any(_is_latin(c) for c in m.group()) else m.group(),
        text,
    )


def _join_spelled(match: re.Match[str]) -> str:
    parts = [p for p in _SPELLED_SEPARATORS.split(match.group()) if p]
    if len(parts) < 3 or any(len(p) != 1 for p in parts):
        return match.group()
    # "make a b o m b": the leading "a" (or "I") is more likely a word of its own than a letter.
    if parts[0] in ("a", "A", "I") and len(parts) >= 4:
        return parts[0] + " " + "".join(parts[1:])
    return "".join(parts)


def _fix_leet(match: re.Match[str]) -> str:
    token = match.group()
    letters = sum(c.isalpha() for c in token)
    if letters < 2 or letters < len(token) / 2:
        return token
    # A stand-in sits between letters ("m3th", "c@r") or is a symbol before them ("$teal"); a
    # digit that only leads or trails ("10kg", "1st", "mp3") is a number next to a word.
    inner = any(
        c in _LEET_CHARS
        and token[:i].rstrip("0134579@$")[-1:].isalpha()
        and any(d.isalpha() for d in token[i + 1 :])
        for i, c in enumerate(token)
    )
    if not (inner or (token[0] in "$@" and token[1:].isalpha())):
        return token
    return token.translate(_LEET)


def _mixed(token: str) -> bool:
    return any(c.isalpha() for c in token) and any(c in _LEET_CHARS for c in token)


def _fix_all_leet(match: re.Match[str]) -> str:
    token = match.group()
    # In a text written in leetspeak, short all-digit words are words too ("4", "70", "47").
    if _mixed(token) or (len(token) <= 3 and all(c in _LEET_CHARS for c in token)):
        return token.translate(_LEET)
    return token


def _fix_leet_outside_addresses(text: str) -> str:
    # Both fixes leave a token without such a character as it is, so only those are visited.
    candidates = _LEET_TOKEN.findall(text)
    if not candidates:
        return text
    mixed = sum(_mixed(t) for t in candidates)
    # Written in leetspeak throughout (a third of the words or more): every word is undone, not
    # just the ones that still look like words.
    fix = _fix_all_leet if mixed >= 3 and mixed * 3 >= len(_TOKEN.findall(text)) else _fix_leet
    out, last = [], 0
    for start, end in _addresses(text):
        out.append(_LEET_TOKEN.sub(fix, text[last:start]))
        out.append(text[start:end])
        last = end
    out.append(_LEET_TOKEN.sub(fix, text[last:]))
    return "".join(out)


def _may_hold_address(text: str) -> bool:
    return "@" in text or "://" in text or "www." in text


def _addresses(text: str) -> list[tuple[int, int]]:
    """(start, end) of each e-mail address or URL in `text`."""
    if not _may_hold_address(text):
        return []
    spans: list[tuple[int, int]] = []
    for run in _WORD_RUN.finditer(text):
        word = run.group()
        if len(word) <= _MAX_ADDRESS_CHARS and _may_hold_address(word):
            spans.extend((run.start() + m.start(), run.start() + m.end()) for m in _ADDRESS.finditer(word))
    return spans


def _join_spaced_text(text: str) -> str | None:
    """A text spelled out letter by letter throughout ("G i v e   m e"): letters joined, and the
    wider gaps between them kept as the word breaks. None when the text is not written so."""
    tokens = text.split()
    if len(tokens) < 8 or sum(len(t) == 1 for t in tokens) < 0.7 * len(tokens):
        return None
    words = re.split(r"\s{2,}", text.strip())
    return " ".join(w.replace(" ", "") for w in words)


def normalize_for_judging(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():  # no ASCII character is an invisible format character (Cf)
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = _fix_lookalikes(text)
    text = _join_spaced_text(text) or _SPELLED.sub(_join_spelled, text)
    return _fix_leet_outside_addresses(text)
