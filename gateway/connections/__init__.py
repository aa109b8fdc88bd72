"""Connections: each instance's state machine (the supervisor), its session at rest (the
keeper, the master key, the private runtime dir), reconnect backoff, and what services ask
of the engines."""
