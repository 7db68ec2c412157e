"""ExGRPO's settings (the `config.method` block of an ExGRPO run), free of JAX."""

from rl_reason.methods.components.replay_settings import ReplaySettings


class ExGRPOSettings(ReplaySettings):
    __doc__ = ReplaySettings.__doc__
