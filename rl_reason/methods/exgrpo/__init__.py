"""ExGRPO."""
