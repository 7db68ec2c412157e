"""LTE + ExGRPO: replay of past successes and hinted retries of unsolved prompts in one
run (docs/methods.md, "Compositions").

Run (embedded task on CPU):
    python -m rl_reason.main --config=configs/lte_exgrpo.py
Expect: ExGRPO's run (configs/exgrpo.py: mixing once a step's fresh accuracy exceeds
0.15, then half of each batch replays a stored success) plus, each step, G hinted
samples for every fresh group with no correct response (configs/lte.py); hinted
successes replace failures as off-policy members trained under the plain prompt and
enter the buffer. `exgrpo/*` and `lte/*` metrics in metrics.jsonl; held-out accuracy
before and after.

Variants (`--config=configs/lte_exgrpo.py:<variant>`, combined with commas): ExGRPO's
(`tiny`, `qwen25_math_1p5b`, `qwen3_4b` and its ablations, see configs/exgrpo.py) and
LTE's `no_concise` and `no_cap`.
"""

from configs import exgrpo, lte
from rl_reason.errors import UnknownVariantError

# ExGRPO's ablations and the hint switches (experiments/ablate.py runs them).
LTE_VARIANTS = ("no_concise", "no_cap")
ABLATIONS = tuple(exgrpo.ABLATIONS) + LTE_VARIANTS
PAPER_NAMES = exgrpo.PAPER_NAMES


def get_config(arg: str = ""):
    c = exgrpo.get_config("")
    c.unlock()
    c.name = "lte_exgrpo"
    c.method_name = "lte_exgrpo"
    hints = lte.get_config("").method
    with c.method.ignore_type():
        for key in hints:
            c.method[key] = hints[key]
    for part in filter(None, arg.split(",")):
        if part in LTE_VARIANTS:
            lte.apply_variant(c, part)
        else:
            try:
                exgrpo.apply_variant(c, part)
            except UnknownVariantError as e:
                raise UnknownVariantError(e.variant, e.known + LTE_VARIANTS) from None
    c.lock()
    return c
