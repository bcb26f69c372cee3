"""Fetch and verify Llama 2 weights: Meta's signed-URL release, or a Hugging Face directory on disk."""
