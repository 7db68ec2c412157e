"""Pieces several methods share: rows and advantages (common), LTE's hints, ExGRPO's
experience buffer and replay step, settings checks, sampler-shape planning."""
