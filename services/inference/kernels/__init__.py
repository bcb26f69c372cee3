"""Custom ops of the decode step (Triton, with PyTorch reference paths for CPU): a skinny GEMM,
paged attention and the rotary + KV-cache write. They see tensors only, never the engine's state.

Torch-free on purpose, so the engine's configuration can name the GEMM choices without importing torch.
"""

# How decode projections of <= 16 rows run on CUDA (decode_gemm.py): cuBLAS, the Triton skinny
# GEMM, or whichever of the two was faster per weight shape when the runner warmed up.
DECODE_GEMMS = ("cublas", "triton", "auto")
# How decode attention (paged_attention.py) multiplies on CUDA: its two products as tensor-core dots
# (each group of query heads padded to 16 rows), or as fp32 multiply-adds on CUDA cores.
DECODE_ATTENTIONS = ("tensor-cores", "cuda-cores")
