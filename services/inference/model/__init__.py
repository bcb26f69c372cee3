"""The Llama 2 model in plain PyTorch: transformer, checkpoints (Meta and Hugging Face formats),
tensor-parallel sharding, tokenizer, chat format, sampler and the reference's static-batch
generator. Nothing here knows about serving: the engine builds on it, never the other way round."""
