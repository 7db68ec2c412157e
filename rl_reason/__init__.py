"""rl_reason: reinforcement learning with verifiable rewards for reasoning LMs, in JAX."""
