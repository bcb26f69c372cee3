"""The public ChatService: authenticated, rate-limited, safety-checked chat and completion, audited."""
