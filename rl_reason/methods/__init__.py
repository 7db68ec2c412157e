"""Training methods, by the name a config gives in `method_name`."""

from rl_reason.methods.base import Method, Request, Row, Sample, StepContext
from rl_reason.methods.exgrpo import ExGRPO
from rl_reason.methods.failure_prefix import FailurePrefix
from rl_reason.methods.grpo import GRPO
from rl_reason.methods.lte import LTE
from rl_reason.methods.lte_exgrpo import LTEExGRPO
from rl_reason.methods.multi_attempt import MultiAttempt
from rl_reason.methods.r3l import R3L

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
