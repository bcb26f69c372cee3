"""The inference service: a Llama 2 model, tensor-parallel over torchrun ranks, served over gRPC.

Read it top down; imports only point down:
- the edge, here: `__main__` (wires everything per rank), `config.py` (flags -> one typed config),
  `servicer.py` (protobuf <-> engine types), `demo.py` (the tiny demo model), `examples/`;
- `engine/`: the scheduler plans each step (`step_plan.py`), the runner packs and runs it over the
  paged KV cache, the engine loop drives both on its own thread and streams events to the edge;
  `blocks.py` hands out KV blocks and keeps the prefix cache (full blocks found by a hash chained
  over their tokens, `prefix_hash.py`), so a prompt that extends an earlier one prefills only the rest;
- `kernels/`: the decode step's Triton ops (paged attention, rotary + KV write, skinny GEMM);
- `model/`: plain PyTorch, nothing of serving: the transformer, checkpoints in Meta and Hugging Face
  formats, tensor-parallel sharding, projection fusion, tokenizer, chat format, sampler, and the
  reference's static-batch generator.
"""
