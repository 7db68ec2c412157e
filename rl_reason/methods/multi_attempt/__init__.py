"""Multi-attempt RL."""
