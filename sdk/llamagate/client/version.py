"""The SDK's version, sent in the gRPC user agent so the gateway's logs say which client called."""

__version__ = "0.1.0"
