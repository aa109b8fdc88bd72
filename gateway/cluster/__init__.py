"""Several nodes on one PostgreSQL: instance leases with fencing, and takeover of a dead
node's instances from their encrypted snapshots (docs/cluster.md)."""
