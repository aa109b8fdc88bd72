"""The `zapgate` command line: serve, keys, instances, health, vault and sessions."""
