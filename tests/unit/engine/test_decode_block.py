"""The fused decode block (kernels/decode_block.py): each fused projection equals the model's ops it
replaces (RMSNorm before, SwiGLU or the residual add after; bf16 and FP8 weights; the GEMV and the
tensor-core kernel), the block's fused forward equals TransformerBlock's, the op compiles, and the
swap is done where it applies and undone on request.

Like test_decode_kernels.py this runs on CUDA, or on CPU under TRITON_INTERPRET=1 (in a child process:
tests/integration/inference_service/test_kernels_interpreted.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from services.inference.config import parse_config
from services.inference.kernels import decode_block, skinny_gemm
from services.inference.model.fp8 import FP8Linear, quantize_projections
from services.inference.model.fusion import fuse_projections
from services.inference.model.transformer import RMSNorm, Transformer, TransformerBlock, init_random_weights
from tests.unit.engine.kernel_env import CUDA, DEVICE, HAS_TRITON, kernels
from tests.unit.engine.stepping import ARGS, DECODE_ROWS, decode_step_cache, random_kv_storage


def reference_project(
    module: nn.Module,
    x: torch.Tensor,
    norm: RMSNorm | None = None,
    glu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """What decode_block.project computes, as the model's own ops (rounding to bf16 between them)."""
    y = module(x if norm is None else norm(x))
    if glu:
        gate, up = y.chunk(2, dim=-1)
        y = torch.nn.functional.silu(gate) * up
    return y if residual is None else residual + y


def projection(out_features: int, in_features: int, fp8: bool) -> nn.Linear | FP8Linear:
    weight = torch.randn(out_features, in_features, device=DEVICE) / in_features**0.5
    if fp8:
        return FP8Linear.from_weight(weight)
    linear = nn.Linear(in_features, out_features, bias=False, device=DEVICE, dtype=torch.bfloat16)
    linear.weight.data.copy_(weight)
    return linear.requires_grad_(False)


def norm(dim: int) -> RMSNorm:
    module = RMSNorm(dim, 1e-5).to(DEVICE, torch.bfloat16).requires_grad_(False)
    module.weight.data.uniform_(0.5, 1.5)
    return module


@kernels
@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize(("rows", "one_row_dot"), [(1, False), (1, True), (5, True)])
@pytest.mark.parametrize(
    "fusion", ["norm", "norm+glu", "glu", "residual"], ids=lambda fusion: fusion.replace("+", "_")
)
def test_a_fused_projection_equals_the_ops_it_replaces(
    fp8: bool, rows: int, one_row_dot: bool, fusion: str
) -> None:
    """Ragged shapes (37 outputs, 200 inputs) exercise the masked loads; one row takes the GEMV or
    the tensor-core kernel, several rows always the latter."""
    torch.manual_seed(rows + 7 * len(fusion) + fp8)
    n, k = 37, 200
    glu = "glu" in fusion
    module = projection(2 * n if glu else n, k, fp8)
    x = torch.randn(rows, k, device=DEVICE, dtype=torch.bfloat16) * 3
    parts = {
        "norm": norm(k) if "norm" in fusion else None,
        "glu": glu,
        "residual": torch.randn(rows, n, device=DEVICE, dtype=torch.bfloat16)
        if "residual" in fusion
        else None,
    }
    norm_module = parts["norm"]
    assert norm_module is None or isinstance(norm_module, RMSNorm)
    spec = skinny_gemm.Fusion(
        norm_weight=None if norm_module is None else norm_module.weight,
        eps=0.0 if norm_module is None else norm_module.eps,
        glu=glu,
        residual=parts["residual"],  # type: ignore[arg-type]
    )
    out = torch.full((rows, n), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    scale = module.scale if isinstance(module, FP8Linear) else None
    skinny_gemm.launch(
        decode_block.fp8_linear._TUNED if fp8 else decode_block.decode_gemm._TUNED,
        x,
        module.weight,
        scale,
        out,
        config={"BLOCK_N": 16, "BLOCK_K": 64},
        one_row_dot=one_row_dot,
        fusion=spec,
    )
    # Against exact arithmetic: the model's own ops round to bf16 between them (which the kernel
    # does not), so they are the looser oracle; the kernel rounds x * norm weight (tensor-core
    # path) and its output once.
    expected = exact_project(module, x, spec).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)
    loose = reference_project(module, x, **parts)  # type: ignore[arg-type]
    torch.testing.assert_close(out.float(), loose.float(), atol=0.1, rtol=0.1)


def exact_project(module: nn.Linear | FP8Linear, x: torch.Tensor, fusion: skinny_gemm.Fusion) -> torch.Tensor:
    weight = module.weight.double()
    if isinstance(module, FP8Linear):
        weight = weight * module.scale.double()[:, None]
    rows = x.double()
    if fusion.norm_weight is not None:
        rms = torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + fusion.eps)
        rows = rows * rms * fusion.norm_weight.double()
    y = rows @ weight.t()
    if fusion.glu:
        gate, up = y.chunk(2, dim=-1)
        y = torch.nn.functional.silu(gate) * up
    return y if fusion.residual is None else y + fusion.residual.double()


@kernels
def test_the_op_as_the_block_calls_it_and_under_compile() -> None:
    torch.manual_seed(3)
    module, rms = projection(2 * 48, 64, fp8=False), norm(64)
    x = torch.randn(2, 1, 64, device=DEVICE, dtype=torch.bfloat16)
    expected = reference_project(module, x, norm=rms, glu=True)
    got = decode_block.project(module, x, norm=rms, glu=True)
    assert got.shape == (2, 1, 48)
    torch.testing.assert_close(got.float(), expected.float(), atol=3e-2, rtol=3e-2)
    if CUDA:
        compiled = torch.compile(
            lambda t: decode_block.project(module, t, norm=rms, glu=True), fullgraph=True
        )
        torch.testing.assert_close(compiled(x), got)


def bf16_model(seed: int) -> Transformer:
    model = Transformer(ARGS)
    init_random_weights(model, seed)
    model = model.to(DEVICE, torch.bfloat16).eval().requires_grad_(False)
    return fuse_projections(model)


@kernels
@pytest.mark.parametrize("fp8", [False, True])
def test_the_fused_block_equals_the_model_block(fp8: bool) -> None:
    """One decode step of two rows through a layer: fused forward against TransformerBlock.forward,
    same cache contents before, same output and cache writes after (up to bf16 rounding)."""
    model = bf16_model(11)
    if fp8:
        quantize_projections(model)
    assert decode_block.use_fused_decode_block(model) == ARGS.n_layers
    layer = model.layers[1]
    assert isinstance(layer, decode_block.FusedDecodeBlock)
    storage = random_kv_storage(torch.bfloat16, DEVICE)
    reference_storage = copy.deepcopy(storage)
    x = torch.randn(2, 1, ARGS.dim, device=DEVICE, dtype=torch.bfloat16)
    positions = torch.tensor(DECODE_ROWS, device=DEVICE)[:, :1]
    cos, sin = model.rope_cos[positions], model.rope_sin[positions]
    with torch.inference_mode():
        got = layer.fused_forward(x, cos, sin, decode_step_cache(storage, fused_rotary=False))
        expected = TransformerBlock.forward(
            layer, x, cos, sin, decode_step_cache(reference_storage, fused_rotary=False)
        )
    assert got.shape == expected.shape
    torch.testing.assert_close(got.float(), expected.float(), atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(storage.k.float(), reference_storage.k.float(), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(storage.v.float(), reference_storage.v.float(), atol=3e-2, rtol=3e-2)


def test_the_swap_applies_to_fused_blocks_only_and_can_be_undone() -> None:
    model = Transformer(ARGS).eval().requires_grad_(False)
    assert decode_block.use_fused_decode_block(model) == 0  # wq/wk/wv not stacked yet
    fuse_projections(model)
    weights = {name: p.data_ptr() for name, p in model.named_parameters()}
    assert decode_block.use_fused_decode_block(model) == ARGS.n_layers
    assert all(type(layer) is decode_block.FusedDecodeBlock for layer in model.layers)
    assert all(layer.sum_group is None and layer.adds_residual for layer in model.layers)
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == weights
    tokens = torch.tensor([[1, 5, 9]])
    with torch.inference_mode():
        # Off CUDA (and for prefill) the fused block is the model's own forward.
        fused_logits = model(tokens)
        assert decode_block.use_fused_decode_block(model, on=False) == 0
        assert all(type(layer) is TransformerBlock for layer in model.layers)
        assert torch.equal(model(tokens), fused_logits)


def test_the_fused_path_applies_to_cuda_decode_steps_of_one_row_only() -> None:
    x = torch.zeros(1, 1, 8, dtype=torch.bfloat16)
    assert not decode_block.fused_path_applies(x)  # CPU
    if CUDA and HAS_TRITON:
        assert decode_block.fused_path_applies(x.cuda())
        assert not decode_block.fused_path_applies(x.cuda().float())
        assert not decode_block.fused_path_applies(torch.zeros(1, 3, 8, dtype=torch.bfloat16, device="cuda"))
        rows = decode_block.MAX_ROWS + 1
        assert not decode_block.fused_path_applies(
            torch.zeros(rows, 1, 8, dtype=torch.bfloat16, device="cuda")
        )


def test_the_flag_turns_the_fused_block_off() -> None:
    base = ["--ckpt-dir", "ckpt", "--tokenizer-path", "tokenizer.model", "--device", "cpu"]
    assert parse_config(base).engine.fused_decode_block
    assert not parse_config([*base, "--no-fused-decode-block"]).engine.fused_decode_block
