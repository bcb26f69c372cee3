"""The safety service: judges dialogs against a policy with a pluggable transformers classifier."""
