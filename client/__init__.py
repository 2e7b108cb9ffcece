"""The stad client: a typed gRPC client (sync and async) and the `stad` CLI."""
