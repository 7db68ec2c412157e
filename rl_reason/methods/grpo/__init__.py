"""GRPO, the baseline."""
