"""The HTTP port: every public RPC over Connect, gRPC-Web and gRPC (see docs/http.md)."""
