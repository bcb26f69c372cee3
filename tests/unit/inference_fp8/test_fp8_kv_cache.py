"""An FP8 KV cache (`--kv-cache-dtype fp8`) on the CPU, through the reference paths: keys and values
stored as float8 e4m3, twice the blocks of a bf16 cache in the same bytes, logits and greedy tokens
close to a full-precision cache's, prefix caching unchanged, and the flag with its refusals.
(The kernels over an fp8 cache: tests/unit/engine/test_decode_kernels.py, test_paged_prefill.py.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.engine.cache_replay import decode_through_cache
from services.inference.engine.config import EngineConfig
from services.inference.engine.kv_cache import bytes_per_block
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import build_runner
from services.inference.engine.scheduler import Scheduler
from services.inference.model.fp8 import FP8_DTYPE, FP8Unsupported, check_fp8_device
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.conversations import Chat, run_chats
from tests.unit.engine.stepping import ARGS, PROMPTS, run_to_completion, tiny_runner
from tests.unit.inference_fp8.flags import parse, pretend_gpu

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def model() -> Transformer:
    model = Transformer(ARGS)
    init_random_weights(model, 2)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize(("dtype", "ratio"), [(torch.bfloat16, 2), (torch.float32, 4)])
def test_an_fp8_cache_holds_twice_a_bf16_caches_blocks_in_the_same_bytes(
    model: Transformer, dtype: torch.dtype, ratio: int
) -> None:
    budget = 64 * bytes_per_block(ARGS.n_layers, ARGS.kv_heads, ARGS.head_dim, 4, dtype)
    blocks = {}
    for kv_cache_dtype in ("auto", "fp8"):
        config = EngineConfig(
            max_seq_len=64, kv_block_size=4, kv_cache_bytes=budget, kv_cache_dtype=kv_cache_dtype
        )
        runner, allocator = build_runner(copy.deepcopy(model).to(dtype), config)
        storage = runner.storage
        assert storage.k.dtype == storage.v.dtype == (FP8_DTYPE if kv_cache_dtype == "fp8" else dtype)
        assert 2 * storage.k.numel() * storage.k.element_size() == budget
        blocks[kv_cache_dtype] = storage.num_blocks
        assert allocator.usable_blocks == storage.num_blocks - 1  # the scheduler hands out all of them
    assert blocks == {"auto": 64, "fp8": ratio * 64}


def test_logits_over_an_fp8_cache_stay_within_a_few_percent_of_the_full_precision_caches(
    model: Transformer,
) -> None:
    """Teacher-forced through the same tokens (the full-precision cache's greedy ones): each decode
    step's logits over the fp8 cache. Measured on this model: max |difference| 0.08, mean 1.5% of
    the logits' spread; values rounded to 3 mantissa bits move them, but not far."""
    for prompt in PROMPTS:
        tokens, full = decode_through_cache(model, prompt, NEW_TOKENS, "auto")
        _, rounded = decode_through_cache(model, prompt, NEW_TOKENS, "fp8", forced=tokens)
        diff = (rounded - full).abs()
        assert diff.max() > 1e-3, "nothing was rounded: the cache is not fp8"
        assert diff.max() < 0.25 and diff.mean() < 0.03 * full.std(), (prompt, diff.max(), diff.mean())


def test_the_engine_generates_through_an_fp8_cache_and_parts_from_full_precision_only_at_near_ties(
    model: Transformer,
) -> None:
    """The scheduler and runner (chunked prefill, batched decode) over an fp8 cache: every sequence
    runs to its length, and follows the full-precision cache's greedy tokens until a step whose two
    best logits lie closer than the fp8 cache moves logits (0.1); after it a sequence may part."""
    config, allocator, runner = tiny_runner(model, num_blocks=40, kv_cache_dtype="fp8")
    assert runner.storage.k.dtype == runner.storage.v.dtype == FP8_DTYPE
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=NEW_TOKENS)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    run_to_completion(scheduler, runner, max_steps=200)
    assert runner.storage.k.float().abs().sum() > 0
    for prompt, sequence in zip(PROMPTS, sequences, strict=True):
        generated = sequence.tokens[len(prompt) :]
        assert len(generated) == NEW_TOKENS
        expected, logits = decode_through_cache(model, prompt, NEW_TOKENS, "auto")
        top = logits.topk(2, dim=-1).values
        gaps = (top[:, 0] - top[:, 1]).tolist()
        first = next((i for i, (a, b) in enumerate(zip(generated, expected, strict=True)) if a != b), None)
        assert first is None or gaps[first] < 0.1, (generated, expected, gaps)


def run_fp8_chats(model: Transformer, caching: bool) -> list[Chat]:
    chats = [
        Chat([[1, 5, 9, 13, 2, 7], [30, 31, 32], [40, 41]], 6),
        Chat([[1, 3], [50, 51, 52, 53, 54], [60]], 5, 2),
    ]
    config, allocator, runner = tiny_runner(model, 40, prefix_caching=caching, kv_cache_dtype="fp8")
    run_chats(Scheduler(config, allocator, eos_id=-1), runner.launch, chats)
    assert allocator.num_free == allocator.usable_blocks
    return chats


def test_a_cached_prefix_in_an_fp8_cache_gives_the_tokens_of_recomputing_it(model: Transformer) -> None:
    """Later turns read their history's fp8 blocks instead of recomputing them: the same tokens."""
    cached, recomputed = run_fp8_chats(model, caching=True), run_fp8_chats(model, caching=False)
    for chat, again in zip(cached, recomputed, strict=True):
        assert [t.tokens for t in chat.turns] == [t.tokens for t in again.turns]
        assert all(t.cached_prompt_tokens > 0 for t in chat.turns[1:])
        assert all(t.cached_prompt_tokens == 0 for t in again.turns)


# -- the flag ------------------------------------------------------------------------------------


def test_the_kv_cache_dtype_defaults_to_the_models_and_accepts_fp8(tmp_path: Path) -> None:
    assert parse(tmp_path, "--device", "cpu").engine.kv_cache_dtype == "auto"
    assert parse(tmp_path, "--device", "cpu", "--kv-cache-dtype", "fp8").engine.kv_cache_dtype == "fp8"


def test_an_unknown_kv_cache_dtype_is_refused_with_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(tmp_path, "--kv-cache-dtype", "int8")
    err = capsys.readouterr().err
    assert "--kv-cache-dtype: invalid choice: 'int8'" in err and "'auto', 'fp8'" in err
    with pytest.raises(ValueError, match="--kv-cache-dtype must be one of auto, fp8, got 'fp16'"):
        EngineConfig(kv_cache_dtype="fp16").validate()


def test_an_fp8_cache_on_a_gpu_without_fp8_names_the_gpu_and_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pretend_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0))
    with pytest.raises(SystemExit):
        parse(tmp_path, "--device", "cuda", "--kv-cache-dtype", "fp8")
    err = capsys.readouterr().err
    assert "--kv-cache-dtype fp8 needs a GPU with FP8 support (compute capability 8.9 or newer" in err
    assert "cuda:0 is NVIDIA A100-SXM4-80GB with compute capability 8.0" in err
    assert "serve with --kv-cache-dtype auto (keys and values cached in --dtype) instead" in err
    # The engine refuses it as well (a runner built without the service's flags).
    with pytest.raises(FP8Unsupported, match="--kv-cache-dtype fp8 needs a GPU with FP8 support"):
        check_fp8_device(torch.device("cuda", 0), "--kv-cache-dtype")
    assert parse(tmp_path, "--device", "cuda").engine.kv_cache_dtype == "auto"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    assert parse(tmp_path, "--device", "cuda", "--kv-cache-dtype", "fp8").engine.kv_cache_dtype == "fp8"
