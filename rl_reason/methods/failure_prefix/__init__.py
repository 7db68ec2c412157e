"""Failure-prefix conditioning."""
