"""The benchmarks' GPU profiles sort kernels into kinds by name (names as an H200 profile shows them); the
inference bench's variant names parse into engine options."""

from __future__ import annotations

import pytest

from bench.inference_bench import kernel_kind, parse_variant


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1_kernel0_0", "prefill_attention"),
        ("_prefill_kernel", "prefill_attention"),
        # Inductor's kernel that prepares attention's inputs is named after the ops it fuses.
        ("triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy__unsafe_view_add_index_mul_1", "fused_elementwise"),
        ("triton_red_fused__scaled_mm__to_copy_abs_amax_clamp_div_gt_ones_like_t_transpose_2", "fused_elementwise"),
        ("triton_poi_fused_index_rotary_write_kv_select_slice_split_with_sizes_view_1", "kv_write"),
        ("nvjet_sm90_tst_168x128_64x5_1x2_h_bz_TNN", "matmul"),
        ("w8a8_kernel", "matmul"),
        ("gemv_kernel", "matmul"),
        ("_dequantize_kernel", "fp8_dequantize"),
        ("_quantize_rows_kernel", "fp8_quantize"),
        ("_decode_kernel", "paged_attention"),
        ("_merge_kernel", "paged_attention"),
        ("Memset (Device)", "copies"),
    ],
)  # fmt: skip
def test_profiled_kernels_get_their_kind(name: str, kind: str) -> None:
    assert kernel_kind(name) == kind


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("auto", ("auto", True, "tensor-cores")),
        ("cublas-unfused", ("cublas", False, "tensor-cores")),
        ("auto-cudacores", ("auto", True, "cuda-cores")),
        ("triton-unfused-cudacores", ("triton", False, "cuda-cores")),
    ],
)
def test_bench_variants_name_a_gemm_and_options(name: str, parsed: tuple[str, bool, str]) -> None:
    assert parse_variant(name) == parsed


@pytest.mark.parametrize("name", ["cutlass", "auto-fast", "auto-unfused-unfused"])
def test_an_unknown_bench_variant_says_what_to_write(name: str) -> None:
    with pytest.raises(SystemExit, match="optionally with -unfused and -cudacores"):
        parse_variant(name)
