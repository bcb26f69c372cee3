"""The three llamagate services (inference, safety, gateway) and their shared code (common)."""
