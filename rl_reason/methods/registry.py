"""The methods, by the name a config gives in `method_name` (methods/<name>/method.py)."""

from rl_reason.methods.base import Method
from rl_reason.methods.exgrpo.method import ExGRPO
from rl_reason.methods.failure_prefix.method import FailurePrefix
from rl_reason.methods.grpo.method import GRPO
from rl_reason.methods.lte.method import LTE
from rl_reason.methods.lte_exgrpo.method import LTEExGRPO
from rl_reason.methods.multi_attempt.method import MultiAttempt
from rl_reason.methods.r3l.method import R3L

METHODS: dict[str, type[Method]] = {
    GRPO.name: GRPO,
    ExGRPO.name: ExGRPO,
    FailurePrefix.name: FailurePrefix,
    LTE.name: LTE,
    LTEExGRPO.name: LTEExGRPO,
    MultiAttempt.name: MultiAttempt,
    R3L.name: R3L,
}


def make_method(name: str, config, tokenizer) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name](config, tokenizer)
