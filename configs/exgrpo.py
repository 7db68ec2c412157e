"""ExGRPO (docs/methods.md, "ExGRPO"): replay of past successes, bucketed by difficulty.

    python -m rl_reason.main --config=configs/exgrpo.py

Until the ExGRPO method lands this config runs plain GRPO with the same settings and
says so at start-up. Variants are GRPO's (see configs/grpo.py).
"""

from configs import base, grpo


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "exgrpo"
    c.method_name = "grpo"
    c.note = ("ExGRPO is not implemented yet: configs/exgrpo.py runs plain GRPO "
              "(method_name='grpo') with the same rollout and optimizer settings.")
    base.embedded_cpu_settings(c)
    grpo.apply_variant(c, arg)
    c.lock()
    return c
