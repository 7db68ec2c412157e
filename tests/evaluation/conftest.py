"""A scripted EvalSession: the responses are given, so an evaluation mode's bookkeeping
(conversations, cuts, feedback, scoring, metrics) can be checked by hand."""

import types

import pytest

from rl_reason import models
from rl_reason.evaluation.session import EvalSession
from rl_reason.verifiers import ExactIntVerifier


class ScriptedSession(EvalSession):
    """generate() answers each prompt with the next text of `script` (plus a stop
    token) and records what it was asked: calls[i] = dict(prompts=decoded prompt texts,
    prefixes, budgets, temperature)."""

    def __init__(self, tokenizer, records, settings, script, *, context=512):
        model = types.SimpleNamespace(config=types.SimpleNamespace(max_position_embeddings=context))
        stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
        super().__init__(model, tokenizer, records, settings, verifier=ExactIntVerifier(),
                         stop_token_ids=(stop,), pad_id=0)
        self.script = list(script)
        self.calls = []

    def generate(self, prompts, *, temperature, rng, prefixes=None, budgets=None):
        self.calls.append(dict(
            prompts=[self.tokenizer.decode(p, skip_special_tokens=False) for p in prompts],
            prefixes=prefixes, budgets=budgets, temperature=temperature))
        texts, self.script = self.script[:len(prompts)], self.script[len(prompts):]
        assert len(texts) == len(prompts), "the script ran out of responses"
        return [(self.tokenizer.encode(t, add_special_tokens=False) + [self.stop_token_ids[0]], False)
                for t in texts]


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_policy):
    return models.load_tokenizer(tiny_policy)


@pytest.fixture
def scripted_session(tiny_tokenizer):
    def make(records, settings, script, **kwargs):
        return ScriptedSession(tiny_tokenizer, records, settings, script, **kwargs)
    return make
