"""Command-line equivalents of the Llama 2 reference examples, runnable under torchrun."""
