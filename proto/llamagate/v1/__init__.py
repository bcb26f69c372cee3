"""Generated gRPC stubs of the llamagate.v1 contract (see proto/llamagate/v1)."""
