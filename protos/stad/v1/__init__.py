"""Generated protobuf and gRPC code for the stad.v1 schema (built by `make protos`)."""
