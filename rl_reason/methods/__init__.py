"""Training methods, by the name a config gives in `method_name`."""

from rl_reason.methods.base import Method, Request, Row, Sample, StepContext
from rl_reason.methods.exgrpo import ExGRPO
from rl_reason.methods.grpo import GRPO

METHODS: dict[str, type[Method]] = {
    GRPO.name: GRPO,
    ExGRPO.name: ExGRPO,
}


def make_method(name: str, config, tokenizer) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name](config, tokenizer)
