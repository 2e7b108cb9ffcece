"""The stad server: the spatio-temporal Transformer detector and its gRPC service."""
