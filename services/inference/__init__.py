"""The inference service: a Llama 2 model, tensor-parallel over torchrun ranks, served over gRPC."""
