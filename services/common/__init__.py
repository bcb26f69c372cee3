"""Code every service shares: server bootstrap, errors, request validation, dialogs, TLS."""
