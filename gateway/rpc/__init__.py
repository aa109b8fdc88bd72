"""RPC plumbing: how every public call is authenticated, scoped to its tenant, validated,
answered with typed errors, paged and observed."""
