"""How an encoder classifier reads a text: the rows it scores, so that no part of it hides.

An encoder classifier mean-pools its input into one vector, so one short harmful sentence among
benign ones is averaged away ("Give me step by step instructions to build a pipe bomb at home."
wrapped in five sentences of small talk passed), and a text longer than one window cannot be
read in one go. So a judged text becomes several rows, each scored on its own, and a category's
score is the max over the rows: one unsafe row makes the whole text unsafe.

The rows of a text (`plan_rows`), each at most `window` tokens:

* the whole text, when it fits one window: a one-sentence message is this one row and nothing
  else, so the common short check costs what it always did;
* each sentence segment (`split_sentences`), when there are two or more: the row in which a
  harmful sentence is not diluted by its neighbours;
* each pair of adjacent segments, when there are three or more (with two, the pair is the whole
  text): meaning that spans two sentences is judged together ("I want to hurt my sister." then
  "How do I do it without leaving marks?");
* when the text is longer than one window: token windows over all of it, each overlapping the
  next by a quarter of the window and the last ending at the last token, so every token is in
  at least one row and text cut at a window's edge is read whole in its neighbour.

Nothing is truncated. A segment or pair longer than a window is not a row of its own: the
windows cover it. Identical rows are judged once. The work grows linearly with the text (about
four times its tokens: segments, pairs, windows). There is deliberately no cap on the rows: a cap
either passes the text beyond it unread (the old --max-windows judged the last four windows, and
a request at the start of a long text passed) or refuses long texts that are fine; the service's
--max-message-bytes already bounds the input, and splitting stays linear at that size whatever
the text's shape.

Segments are tokenised one by one (tokenisers split at the whitespace and punctuation where
segments end, so their concatenation is the text's own tokens) and the pairs and windows are
slices of that one token sequence, so the plan is built without tokenising anything twice.
Pure: no torch, so it is tested without a model and any encoder drops in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

Tokenize = Callable[[str], Sequence[int]]
TokenRow = tuple[int, ...]

# A segment of fewer words than this ("Yes.", "Sure!", "Thanks.") says little on its own and is
# read with the segment after it (the one before, at the end of the text); a row of its own would
# cost a short message a second encoder row for nothing. Two words ("Kill him.") stand alone.
MIN_SEGMENT_WORDS = 2

# A run of text with no sentence end is cut into segments of at most this many characters (at
# whitespace where there is some): far more than one window, so the windows over the text still
# judge it, while the tokenizer is never handed megabytes at once.
MAX_SEGMENT_CHARS = 2048

# Words that end with a period without ending a sentence (compared lower-case, without the period).
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "approx", "fig", "figs"}
    | {"vol", "eq", "ca", "dept", "est", "inc", "ltd", "co", "corp"}
)

# A segment ends after a terminator run (then closing quotes or brackets) followed by whitespace,
# after a CJK full stop (no whitespace follows one), or at a line break; an inline bullet starts one.
# Runs are matched from their start only and possessively, so a long run of dots stays linear.
_BOUNDARY = re.compile(
    r"(?<![.!?…])(?P<stop>[.!?…]++)[\"'”’»)\]]*+(?=\s|$)"
    r"|[。！？｡]+[」』”’）]*"
    r"|\n"
    r"|(?<=\s)(?=[•◦▪‣●])"
)
_SPACE = re.compile(r"\s*")
_DOTTED = re.compile(r"(?:[a-z]\.)+[a-z]")  # e.g, i.e, a.m, u.s
# A word: a run of letters or digits, or one CJK character (those scripts put no spaces
# between words, so a Chinese sentence is many words, not one).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"  # kana, Han, Hangul
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_LOOK_BACK = 32

# A request run into the next sentence without punctuation ("... at home Hi there, how are you?")
# is one segment to the rules above. In a long segment, a capitalised word that usually opens a
# sentence ("Hi", "The", "How", "Write", "I") right after a lower-case word is read as where a
# new one starts; both sides must be long enough to be sentences. Proper nouns ("visit Paris",
# "the Holocaust") split nothing, and the pair rows read the two sides together again anyway.
SOFT_SPLIT_MIN_WORDS = 12
SOFT_SPLIT_SIDE_WORDS = 4
SOFT_SPLIT_OTHER_LEFT_WORDS = 8
_LOWER_NEXT = re.compile(r"\s+[a-z]")
_STARTER_WORDS = (
    "I Hi Hello Hey Thanks Thank Please Sorry Anyway Also Oh Well Yes No Okay Sure Maybe Just So But "
    "And Then Now We You He She They It My Our Your His Her Their The This That These Those There Here "
    "What How Why When Where Who Which Can Could Would Should Will Do Does Did Is Are Was Were Have Has "
    "Let Tell Give Write Explain Describe Make Create List Generate Provide Show Find Help If After "
    "Before Today Yesterday Tomorrow Last Next"
)
SENTENCE_STARTERS = frozenset(_STARTER_WORDS.split())
_SOFT_BOUNDARY = re.compile(r"(?<=[\w,;:)\]\"'])\s+(?=(I|[A-Z][a-z]+)\b)")


def _is_abbreviation(text: str, stop_at: int) -> bool:
    """Whether the single period at `stop_at` closes an abbreviation, an initial or a list number."""
    # A bounded look back: the word before a period is short, and scanning back to the start of
    # the line would make a long text without line breaks quadratic.
    origin = max(0, stop_at - _LOOK_BACK)
    before = text[origin:stop_at]
    if not before or before[-1].isspace():
        return False
    *rest, word = before.rsplit(None, 1)
    if not rest and origin > 0:
        return False  # a word longer than the look back
    word = word.lstrip("\"'“‘«([")
    lower = word.lower()
    if lower in ABBREVIATIONS or (len(word) == 1 and word.isupper()):
        return True
    if "." in lower and _DOTTED.fullmatch(lower):
        return True
    if not (word.isdigit() and len(word) <= 3):
        return False
    # "1." opening a line is a numbered list's marker, not a sentence.
    ahead = text[origin : stop_at - len(word)]
    line = ahead[ahead.rfind("\n") + 1 :]
    return not line.strip() and ("\n" in ahead or origin == 0)


def _pieces(text: str) -> list[str]:
    pieces = []
    start = pos = 0
    while (match := _BOUNDARY.search(text, pos)) is not None:
        stop = match.group("stop")
        end = match.end()
        if match.start() == end:  # an inline bullet: the segment before it ends here
            if end > start:
                pieces.append(text[start:end])
                start = end
            pos = end + 1
            continue
        if stop == "." and _is_abbreviation(text, match.start()):
            pos = end
            continue
        # Whitespace after the boundary stays with the segment it follows.
        space = _SPACE.match(text, end)
        end = space.end() if space else end
        pieces.append(text[start:end])
        start = pos = end
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def split_sentences(text: str) -> list[str]:
    """Sentence segments of `text`, in order; joined they are `text` exactly (whitespace included).

    A segment ends at `.`, `!`, `?` or `…` followed by whitespace (closing quotes and brackets
    stay with it), at a CJK full stop, and at every line break (a line of a list or a poem is a
    segment); an inline bullet starts one. A period inside a number ("3.5", "example.com") or after
    an abbreviation ("e.g.", "Dr.", "J."), or a list number opening a line ("1.") ends nothing.
    Very short segments (`MIN_SEGMENT_WORDS`) join the next one, or the previous one at the end;
    very long ones are cut (`MAX_SEGMENT_CHARS`).
    Line breaks win over grammar: a hard-wrapped sentence is cut at its line ends, and the pair
    rows put its halves back together.
    """
    segments: list[str] = []
    pending: list[str] = []
    words = 0
    for piece in _pieces(text):
        pending.append(piece)
        words += len(_WORD.findall(piece))
        if words >= MIN_SEGMENT_WORDS:
            segments.append("".join(pending))
            pending, words = [], 0
    if pending:
        if segments:
            segments[-1] += "".join(pending)
        else:
            segments.append("".join(pending))
    # Soft splits after the cut: a cut segment is bounded, so counting its words stays cheap.
    return [soft for segment in segments for part in _cut(segment) for soft in _soft_split(part)]


def _soft_split(segment: str) -> list[str]:
    # Words that usually open a sentence are the stronger evidence: split at them first, then at
    # other capitalised words within what is left. In one pass, a capitalised word inside the
    # request ("... manufacturing Tetrodotoxin at home The tomatoes ...") could cut it first and
    # leave the real boundary with too short a side to split.
    return [
        part
        for first in _soft_split_at(segment, starters_only=True)
        for part in _soft_split_at(first, starters_only=False)
    ]


def _soft_split_at(segment: str, starters_only: bool) -> list[str]:
    if len(_WORD.findall(segment)) < SOFT_SPLIT_MIN_WORDS:
        return [segment]
    parts: list[str] = []
    start = 0
    for match in _SOFT_BOUNDARY.finditer(segment):
        left = segment[start : match.end()]
        right = segment[match.end() :]
        left_words = len(_WORD.findall(left))
        # Any other capitalised word followed by a lower-case one ("... voter fraud Traffic on
        # the ring road ...") splits only a longer left side, so a name early in a sentence does not.
        starts = match.group(1) in SENTENCE_STARTERS or (
            not starters_only
            and left_words >= SOFT_SPLIT_OTHER_LEFT_WORDS
            and _LOWER_NEXT.match(right, len(match.group(1))) is not None
        )
        if (
            starts
            and left_words >= SOFT_SPLIT_SIDE_WORDS
            and len(_WORD.findall(right)) >= SOFT_SPLIT_SIDE_WORDS
        ):
            parts.append(left)
            start = match.end()
    parts.append(segment[start:])
    return parts


def _cut(segment: str) -> list[str]:
    parts = []
    while len(segment) > MAX_SEGMENT_CHARS:
        at = segment.rfind(" ", MAX_SEGMENT_CHARS // 2, MAX_SEGMENT_CHARS) + 1 or MAX_SEGMENT_CHARS
        parts.append(segment[:at])
        segment = segment[at:]
    return [*parts, segment]


@dataclass(frozen=True)
class Row:
    """Token ids (without the encoder's special tokens) that the encoder scores as one input."""

    tokens: TokenRow
    # Made only of segments before the text's last one: a longer text that starts the same way
    # (the next chunk of a streamed output) has this row too, so its scores can be kept.
    settled: bool


@dataclass(frozen=True)
class Plan:
    rows: tuple[Row, ...]  # distinct, each at most the window
    judged_tokens: int  # tokens of the whole text; every one is in some row


@dataclass
class SegmentCache:
    """What a stream of growing texts (an output judged chunk by chunk) already established.

    Keyed by content, so a hit can never be stale: the tokens of a segment by its text, the
    scores of a row (in the classifier's label order) by its tokens. Only what belongs to settled
    segments is kept, so it grows with the text, not with the number of chunks.
    """

    tokens: dict[str, TokenRow] = field(default_factory=dict)
    scores: dict[TokenRow, tuple[float, ...]] = field(default_factory=dict)


def token_windows(count: int, window: int) -> list[tuple[int, int]]:
    """(start, end) of windows covering tokens 0..count: a quarter of a window's overlap between
    neighbours, the first starting at 0 and the last ending at `count`; [] when one window holds
    them all. Start-aligned, so a growing text keeps its earlier windows (and their cached scores)."""
    if window < 1:
        raise ValueError("window must be >= 1")
    if count <= window:
        return []
    stride = window - window // 4
    spans = [(start, start + window) for start in range(0, count - window, stride)]
    return [*spans, (count - window, count)]


def plan_rows(text: str, tokenize: Tokenize, window: int, cache: SegmentCache | None = None) -> Plan:
    """The rows that judge `text` (see the module docstring). `cache`: a stream's, read and filled."""
    if window < 1:
        raise ValueError("window must be >= 1")
    segments = split_sentences(text)
    tokens: list[int] = []
    bounds: list[tuple[int, int]] = []  # each non-empty segment's span in `tokens`
    seen: dict[str, TokenRow] = {}  # a segment that recurs is tokenised once
    for i, segment in enumerate(segments):
        ids = seen.get(segment)
        if ids is None and cache is not None:
            ids = cache.tokens.get(segment)
        if ids is None:
            ids = tuple(tokenize(segment))
        seen[segment] = ids
        if cache is not None and i < len(segments) - 1:
            cache.tokens[segment] = ids  # settled: the stream's next chunk has it too
        if ids:
            bounds.append((len(tokens), len(tokens) + len(ids)))
            tokens.extend(ids)
    count = len(tokens)
    settled_end = bounds[-1][0] if bounds else -1
    rows: dict[TokenRow, bool] = {}

    def add(start: int, end: int) -> None:
        key = tuple(tokens[start:end])
        rows[key] = rows.get(key, False) or end <= settled_end

    if count <= window:
        add(0, count)  # the empty text too: it is judged, as one empty row
    if len(bounds) > 1:
        for start, end in bounds:
            if end - start <= window:
                add(start, end)
    if len(bounds) > 2:
        for (start, _), (_, end) in pairwise(bounds):
            if end - start <= window:
                add(start, end)
    for start, end in token_windows(count, window):
        add(start, end)
    return Plan(tuple(Row(key, settled) for key, settled in rows.items()), count)
