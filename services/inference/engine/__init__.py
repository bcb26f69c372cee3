"""The serving engine: continuous-batching scheduler, paged KV cache, model runner and the step loop
that drives them on its own thread. It speaks domain types (request.py), never protobuf."""
