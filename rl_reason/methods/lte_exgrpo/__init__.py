"""LTE + ExGRPO."""
