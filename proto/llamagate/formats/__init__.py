"""Formats that llamagate servers and clients both read, torch-free: the audit trail's records
(audit.py) and the rules a Hugging Face Llama checkpoint must follow to be served (llama_hf.py)."""
