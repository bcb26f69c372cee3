"""--device / --dtype: parsed and validated once, then honoured by every classifier.

Each backend is built the way the service builds it (flags -> config_from_args -> build_classifier)
and judges on the requested device; the cuda variants run where a GPU is present.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.classifiers import embedded
from services.safety.classifiers.base import Classifier
from services.safety.classifiers.embedded import EmbeddedClassifier, default_precision
from services.safety.classifiers.factory import build_classifier
from services.safety.classifiers.llama_guard import LlamaGuardClassifier
from services.safety.classifiers.sequence import SequenceClassifier
from services.safety.config import (
    AUTO_INLINE_AFTER_IDLE_S,
    SafetyConfig,
    build_parser,
    config_from_args,
    inline_after_idle_s,
)
from services.safety.device import CPU, cpu_runs_bf16_natively
from services.safety.head import DEFAULT_HEAD, load_head
from services.safety.policy import POLICIES_DIR, load_policy
from services.safety.verdict import CheckItem
from tests.unit.safety.tiny_models import build_tiny_bert_classifier, build_tiny_llama_guard

# The tiny Llama Guard answers in Llama Guard 1's O-codes.
O_POLICY = POLICIES_DIR / "llama_guard.yaml"

CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
)
DEVICES = ["cpu", CUDA]
DIALOG = [
    Message(Role.USER, "How do I pick a lock?"),
    Message(Role.ASSISTANT, "First, get a tension wrench."),
]
ITEMS = [CheckItem(DIALOG, Direction.OUTPUT), CheckItem(DIALOG[:1], Direction.INPUT)]


def config(*flags: str) -> SafetyConfig:
    return config_from_args(build_parser().parse_args(list(flags)))


def build(*flags: str) -> Classifier:
    cfg = config(*flags)
    return build_classifier(cfg, load_policy(cfg.policy_path))


def weights(module: torch.nn.Module) -> set[tuple[str, torch.dtype]]:
    return {(p.device.type, p.dtype) for p in module.parameters()}


def test_defaults_resolve_auto_to_this_machine() -> None:
    cfg = config()
    if torch.cuda.is_available():
        # The embedded classifier picks its own precision; another backend gets half precision.
        assert cfg.device == torch.device("cuda") and cfg.dtype is None
        other = config("--classifier", "sequence", "--model-dir", "m", "--label-map", "l.yaml")
        assert other.dtype in (torch.bfloat16, torch.float16)
    else:
        # On the CPU, auto keeps each backend's own choice of dtype.
        assert cfg.device == torch.device("cpu") and cfg.dtype is None


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("auto", None), ("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", torch.float32)],
)
def test_cpu_device_and_each_dtype_parse(dtype: str, expected: torch.dtype | None) -> None:
    cfg = config("--device", "cpu", "--dtype", dtype)
    assert cfg.device == torch.device("cpu") and cfg.dtype == expected


@pytest.mark.parametrize(
    ("setting", "classifier", "device", "expected"),
    [
        ("auto", "embedded", "cuda", AUTO_INLINE_AFTER_IDLE_S),  # CUDA graphs: ~1 ms of host time
        ("auto", "embedded", "cpu", None),  # a CPU forward's thread pool belongs to the worker
        ("auto", "llama-guard", "cuda", None),  # a generation would hold the event loop
        ("auto", "sequence", "cuda", None),
        ("off", "embedded", "cuda", None),
        ("5", "embedded", "cpu", 0.005),
        ("0", "embedded", "cuda", 0.0),
    ],
)
def test_inline_checks_default_to_the_embedded_classifier_on_cuda(
    setting: str, classifier: str, device: str, expected: float | None
) -> None:
    args = build_parser().parse_args(["--inline-after-idle-ms", setting])
    assert inline_after_idle_s(args.inline_after_idle_ms, classifier, torch.device(device)) == expected
    if device == "cpu":  # config_from_args resolves a cuda device only where there is one
        cfg = config("--inline-after-idle-ms", setting, "--device", "cpu")
        assert cfg.batcher.inline_after_idle_s == (expected if classifier == "embedded" else None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--inline-after-idle-ms", "soon"], "expected auto, off or milliseconds, not 'soon'"),
        (["--inline-after-idle-ms", "-1"], "must be >= 0 ms, not -1.0"),
        (["--device", "gpu"], "argument --device: choose from auto, cpu, cuda, not 'gpu'"),
        (["--device", "cuda:0"], "argument --device: choose from auto, cpu, cuda"),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    ],
)
def test_unknown_device_or_dtype_is_a_usage_error(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
def test_llama_guard_loads_onto_the_device_and_judges(tmp_path: Path, device: str) -> None:
    build_tiny_llama_guard(tmp_path, ["unsafe", "\n", "O3"])
    classifier = build(
        "--classifier",
        "llama-guard",
        "--model-dir",
        str(tmp_path),
        "--device",
        device,
        "--policy",
        str(O_POLICY),
    )
    assert isinstance(classifier, LlamaGuardClassifier)
    expected_dtype = torch.float32 if device == "cpu" else config("--device", device).dtype
    assert weights(classifier.model) == {(device, expected_dtype)}
    for judgement in classifier.judge(ITEMS):
        assert judgement.flagged == {"O3"}
        assert isinstance(judgement.scores["O3"], float) and judgement.scores["O3"] > 0.99


def test_llama_guard_honours_an_explicit_dtype_on_cpu(tmp_path: Path) -> None:
    build_tiny_llama_guard(tmp_path, ["unsafe", "\n", "O3"])
    flags = (
        "--classifier",
        "llama-guard",
        "--model-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--policy",
        str(O_POLICY),
    )
    classifier = build(*flags, "--dtype", "bfloat16")
    assert isinstance(classifier, LlamaGuardClassifier)
    assert weights(classifier.model) == {("cpu", torch.bfloat16)}
    [judgement] = classifier.judge(ITEMS[:1])
    assert judgement.flagged == {"O3"} and judgement.scores["O3"] > 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_sequence_classifier_on_the_device_scores_like_fp32_on_cpu(tmp_path: Path, device: str) -> None:
    model_dir = build_tiny_bert_classifier(tmp_path / "bert", ["benign", "violence", "weapons"])
    label_map = tmp_path / "labels.yaml"
    label_map.write_text("benign: null\nviolence: O1\nweapons: O4\n")
    flags = ("--classifier", "sequence", "--model-dir", str(model_dir), "--label-map", str(label_map))
    reference = build(*flags, "--device", "cpu", "--dtype", "float32")
    classifier = build(*flags, "--device", device)
    assert isinstance(classifier, SequenceClassifier)
    assert {d for d, _ in weights(classifier.model)} == {device}
    # Long enough for several windows, so the per-text max over windows is exercised too.
    items = [CheckItem([Message(Role.USER, "kill python process " * 40)], Direction.INPUT), *ITEMS]
    got, want = classifier.judge(items), reference.judge(items)
    tolerance = 0.0 if device == "cpu" else 0.02  # bf16 on the GPU
    for g, w in zip(got, want, strict=True):
        assert set(g.scores) == {"O1", "O4"} and g.judged_tokens == w.judged_tokens
        for code, score in g.scores.items():
            assert isinstance(score, float) and abs(score - w.scores[code]) <= tolerance


@pytest.mark.parametrize("device", DEVICES)
def test_embedded_encoder_and_head_run_on_the_device(device: str) -> None:
    texts = ["How do I build a pipe bomb at home?", "What is a good recipe for banana bread?"]
    items = [CheckItem([Message(Role.USER, t)], Direction.INPUT) for t in texts]
    reference = build("--device", "cpu", "--dtype", "float32")
    classifier = build("--device", device)
    assert isinstance(classifier, EmbeddedClassifier) and isinstance(reference, EmbeddedClassifier)
    assert weights(classifier.head) == {(device, torch.float32)}
    encoder_weights = weights(classifier.encoder.model)
    if device == "cpu":
        # auto on the CPU keeps the precision the head was trained on (its file says which),
        # unless that is bf16 and this CPU has no bf16 instructions.
        trained = load_head(DEFAULT_HEAD)[2].get("precision", "bf16")
        assert classifier.encoder.config.precision == default_precision(trained, CPU)
    else:
        # auto on CUDA: bf16 (fp16 on GPUs without it), with an fp32 copy for rows near a
        # threshold (default_precision says why).
        assert config("--device", device).dtype is None
        assert encoder_weights == {
            (device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        }
        assert classifier._exact is not None
        assert weights(classifier._exact.model) == {(device, torch.float32)}
    assert {d for d, _ in encoder_weights} <= {device}
    assert weights(reference.encoder.model) == {("cpu", torch.float32)}
    got, want = classifier.judge(items), reference.judge(items)
    for g, w in zip(got, want, strict=True):
        assert set(g.scores) == classifier.labels()
        for code, score in g.scores.items():
            # Half precision (bf16 weights) against fp32: the same judgement, a little noise.
            assert isinstance(score, float) and abs(score - w.scores[code]) <= 0.05


def test_a_bf16_head_runs_in_fp32_on_a_cpu_without_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "cpu_runs_bf16_natively", lambda: False)
    assert default_precision("bf16", CPU) == "fp32"
    # On CUDA the trained precision, or fp16 where the GPU has no bf16.
    monkeypatch.setattr(embedded, "cuda_runs_bf16", lambda: True)
    assert default_precision("bf16", torch.device("cuda")) == "bf16"
    assert default_precision("fp32", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(embedded, "cuda_runs_bf16", lambda: False)
    assert default_precision("bf16", torch.device("cuda")) == "fp16"
    monkeypatch.setattr(embedded, "cpu_runs_bf16_natively", lambda: True)
    assert default_precision("bf16", CPU) == "bf16"
    assert default_precision("fp32", CPU) == "fp32"
    monkeypatch.setattr(embedded, "cpu_runs_bf16_natively", lambda: False)
    assert default_precision("bf16", CPU, fp32_without_bf16=False) == "bf16"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU flags of /proc/cpuinfo")
def test_bf16_instructions_are_detected_as_the_cpu_flags_say() -> None:
    flags = next(
        (
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ),
        [],
    )
    assert cpu_runs_bf16_natively() == ("avx512_bf16" in flags or "amx_tile" in flags)


@pytest.mark.parametrize(
    "flags",
    [
        ["--classifier", "sequence", "--model-dir", "m", "--label-map", "l", "--device", "cpu"],
        pytest.param(
            ["--device", "cuda"],
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_compile_outside_the_embedded_cpu_encoder_is_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit, match="--compile applies to --classifier embedded with --device cpu"):
        config_from_args(build_parser().parse_args(["--compile", *flags]))
