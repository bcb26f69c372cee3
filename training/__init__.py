"""Tooling that builds and measures the models the services load; not part of the runtime services."""
