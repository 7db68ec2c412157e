"""ExGRPO: learning from the policy's own past successes (docs/methods.md, "ExGRPO").
The step is methods/components/replay.py's, which LTE + ExGRPO shares."""

from rl_reason.methods.components.replay import ExperienceReplay
from rl_reason.methods.exgrpo.settings import ExGRPOSettings


class ExGRPO(ExperienceReplay):
    name = "exgrpo"
    Settings = ExGRPOSettings
