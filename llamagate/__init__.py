"""llamagate: Llama 2 chat and text models behind a safety filter, over gRPC."""

__version__ = "0.1.0"
