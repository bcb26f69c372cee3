"""`llamagate` subcommands that talk to a running stack; each module has `register(subparsers)`."""
