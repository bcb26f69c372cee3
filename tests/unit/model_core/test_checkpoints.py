"""Checkpoint formats: logits equal transformers' LlamaForCausalLM, Meta <-> HF copies load identically,
any shard count reshards to any rank count, and impossible layouts are refused with a clear message."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from services.inference.model.checkpoint import (
    CheckpointError,
    MetaWeights,
    load_model,
    meta_params,
    read_model_args,
    save_meta_checkpoint,
)
from services.inference.model.hf_format import HFWeights, from_rotate_half, save_hf_checkpoint, to_rotate_half
from services.inference.model.parallel import ParallelContext, local_shard, split_dim
from services.inference.model.transformer import CONFIGS, ModelArgs, Transformer
from tests.support.models import CPU_MP1, assert_same_weights, full_state, random_model, tiny_args


def _hf_model(tmp_path: Path, *, kv_heads: int, tied: bool = False) -> tuple[LlamaForCausalLM, Path]:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=320,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        initializer_range=0.2,  # large enough that attention patterns and rotary errors show in logits
    )
    model = LlamaForCausalLM(config).eval()
    out = tmp_path / "hf"
    model.save_pretrained(out)
    return model, out


def _tokens(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("kv_heads", "tied"), [(4, False), (2, False), (1, True)], ids=["mha", "gqa", "mqa-tied"]
)
def test_logits_equal_transformers_llama(tmp_path: Path, kv_heads: int, tied: bool) -> None:
    hf, path = _hf_model(tmp_path, kv_heads=kv_heads, tied=tied)
    ours = load_model(path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)
    tokens = _tokens(320)
    with torch.no_grad():
        expected = hf(tokens).logits
        actual = ours(tokens)
    assert expected.abs().max() > 1.0  # not a vacuous comparison of near-zero logits
    assert (actual - expected).abs().max().item() <= 1e-4


def test_rotary_permutation_round_trips() -> None:
    w = torch.randn(8 * 16, 64)
    assert torch.equal(from_rotate_half(to_rotate_half(w, 8), 8), w)
    assert not torch.equal(to_rotate_half(w, 8), w)


def test_meta_and_hf_copies_load_to_identical_models(tmp_path: Path) -> None:
    _, hf_path = _hf_model(tmp_path, kv_heads=2)
    from_hf = load_model(hf_path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)
    # HF -> Meta (2 shards) -> load: same weights.
    meta_path = tmp_path / "meta"
    save_meta_checkpoint(full_state(from_hf), meta_params(from_hf.args), meta_path, num_shards=2)
    from_meta = load_model(meta_path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)
    assert_same_weights(from_hf, from_meta)
    # Meta -> HF with our writer -> load: same weights again, and transformers reads it to the same logits.
    hf_again = tmp_path / "hf-again"
    save_hf_checkpoint(full_state(from_meta), from_meta.args, hf_again)
    assert_same_weights(from_meta, load_model(hf_again, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64))
    reloaded = LlamaForCausalLM.from_pretrained(hf_again).eval()
    tokens = _tokens(320, seed=1)
    with torch.no_grad():
        assert (reloaded(tokens).logits - from_meta(tokens)).abs().max().item() <= 1e-4


def test_meta_params_round_trip_including_the_reference_ffn_rule(tmp_path: Path) -> None:
    args = ModelArgs(
        dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=48, ffn_dim_multiplier=1.3
    )
    model = random_model(replace(args, max_seq_len=32))
    save_meta_checkpoint(full_state(model), meta_params(args), tmp_path, num_shards=1)
    assert read_model_args(tmp_path) == args
    # int(2 * 4 * 64 / 3) = 170, * 1.3 -> 221, rounded up to a multiple of 48 -> 240.
    assert model.state_dict()["layers.0.feed_forward.w1.weight"].shape[0] == args.hidden_dim == 240


def test_released_llama2_shapes() -> None:
    assert {name: (a.hidden_dim, a.kv_heads) for name, a in CONFIGS.items()} == {
        "7B": (11008, 32),
        "13B": (13824, 40),
        "70B": (28672, 8),
    }


def test_vocab_size_minus_one_is_read_from_the_embedding(tmp_path: Path) -> None:
    args = tiny_args()
    save_meta_checkpoint(full_state(random_model(args)), {**meta_params(args), "vocab_size": -1}, tmp_path, 2)
    assert read_model_args(tmp_path).vocab_size == args.vocab_size


@pytest.mark.parametrize("source_shards", [1, 2, 4])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_any_shard_count_reshards_to_any_rank_count(
    tmp_path: Path, source_shards: int, world_size: int
) -> None:
    args = tiny_args()
    state = full_state(random_model(args))
    save_meta_checkpoint(state, meta_params(args), tmp_path / "meta", num_shards=source_shards)
    save_hf_checkpoint(state, args, tmp_path / "hf")
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    meta = MetaWeights(tmp_path / "meta", shapes)
    with ExitStack() as stack:
        hf = HFWeights(tmp_path / "hf", args, shapes, stack)
        for rank in range(world_size):
            for name, tensor in state.items():
                expected = local_shard(tensor, split_dim(name), rank, world_size)
                assert torch.equal(meta.read(name, split_dim(name), rank, world_size), expected), name
                assert torch.equal(hf.read(name, split_dim(name), rank, world_size), expected), name


def test_model_parallel_size_must_divide_the_heads(tmp_path: Path) -> None:
    args = tiny_args()  # 8 heads, 4 kv heads
    save_meta_checkpoint(full_state(random_model(args)), meta_params(args), tmp_path, num_shards=1)
    for world_size in (3, 8):
        ctx = ParallelContext(0, world_size, 0, torch.device("cpu"), "gloo")
        with pytest.raises(
            CheckpointError, match=rf"model-parallel size {world_size} does not divide .*n_kv_heads"
        ):
            load_model(tmp_path, ctx=ctx, dtype=torch.float32, max_seq_len=64)


def test_shard_count_mismatched_with_shapes_is_refused(tmp_path: Path) -> None:
    args = tiny_args()
    save_meta_checkpoint(full_state(random_model(args)), meta_params(args), tmp_path, num_shards=2)
    (tmp_path / "consolidated.01.pth").unlink()  # one half-width shard left, claiming to be everything
    with pytest.raises(CheckpointError, match=r"shard count or params\.json does not match"):
        load_model(tmp_path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)


def test_params_json_disagreeing_with_weights_is_refused(tmp_path: Path) -> None:
    args = tiny_args()
    save_meta_checkpoint(full_state(random_model(args)), {**meta_params(args), "n_layers": 3}, tmp_path, 1)
    with pytest.raises(CheckpointError, match=r"missing \['layers.2"):
        load_model(tmp_path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)


def test_hf_config_disagreeing_with_weights_is_refused(tmp_path: Path) -> None:
    _, path = _hf_model(tmp_path, kv_heads=2)
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 192
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"mlp\.gate_proj\.weight has shape \(176, 64\), but config\.json implies"
    ):
        load_model(path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)
    config["intermediate_size"], config["num_hidden_layers"] = 176, 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unexpected \['\(hf\) model\.layers\.1\."):
        load_model(path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)


def test_tokenizer_vocab_mismatch_is_refused(tmp_path: Path) -> None:
    args = tiny_args()
    save_meta_checkpoint(full_state(random_model(args)), meta_params(args), tmp_path, 1)
    with pytest.raises(CheckpointError, match="tokenizer has 32000 tokens"):
        load_model(tmp_path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64, vocab_size=32000)


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"params\.json"):
        load_model(tmp_path, ctx=CPU_MP1, dtype=torch.float32, max_seq_len=64)


def test_hf_rope_scaling_is_refused(tmp_path: Path) -> None:
    _, path = _hf_model(tmp_path, kv_heads=2)
    config = json.loads((path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="rope scaling"):
        read_model_args(path)


def test_loaded_model_is_in_the_requested_dtype_with_fp32_rotary(tmp_path: Path) -> None:
    args = tiny_args()
    save_meta_checkpoint(full_state(random_model(args)), meta_params(args), tmp_path, 2)
    model = load_model(tmp_path, ctx=CPU_MP1, dtype=torch.bfloat16, max_seq_len=64)
    assert isinstance(model, Transformer)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rope_cos.dtype == torch.float32 and model.rope_cos.shape == (128, args.head_dim // 2)
    assert model(torch.tensor([[1, 2, 3]])).dtype == torch.float32
