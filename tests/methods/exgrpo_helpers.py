"""Test helpers for ExGRPO: hand-made records, samples and step contexts, and a
verifier that marks about half of all responses correct, so a random tiny policy
fills the buffer (it never solves the task for real).

Also a script: `python tests/methods/exgrpo_helpers.py WORKDIR POLICY STEPS` runs
configs/exgrpo.py:tiny with that verifier and mixing from step 2 (the SIGKILL test
runs it in a subprocess, which cannot see a test's monkeypatch).
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from configs import exgrpo as exgrpo_config  # noqa: E402
from rl_reason.data.record import Record  # noqa: E402
from rl_reason.protocol import Request, Sample, StepContext, TokenScores  # noqa: E402
from rl_reason.verifiers import VerifyResult  # noqa: E402


class HalfCorrectVerifier:
    """Correct iff the CRC-32 of the response text is even: deterministic in the text
    (so a replayed trajectory stays correct), and about half of any group."""

    name = "half_correct_test"

    def __init__(self, *args, **kwargs):
        pass

    def verify_batch(self, responses, answers):
        return [VerifyResult(1.0, "correct", "1") if zlib.crc32(r.encode()) % 2 == 0
                else VerifyResult(0.0, "wrong", "0") for r in responses]

    def close(self):
        pass


def tiny_config(policy: str | None = None, variant: str = "", config_module=exgrpo_config,
                **overrides):
    """configs/exgrpo.py:tiny[,variant] (or another config module built on it, such as
    configs/lte_exgrpo.py) with dotted-key overrides ('method.replay_ratio')."""
    c = config_module.get_config(",".join(filter(None, ["tiny", variant])))
    c.unlock()
    if policy:
        c.model.checkpoint = policy
    c.train.export_hf = False
    c.verifier.num_workers = 1
    c.optim.update(learning_rate=1e-3, warmup_steps=0)
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def record(i: int) -> Record:
    return Record(problem=f"What is {i}+0?", answer=str(i), id=f"q{i}", source="test")


def request(rec: Record, num_samples: int, group: str, tag: str = "fresh",
            context=(1, 2, 3)) -> Request:
    return Request(record=rec, context=list(context), num_samples=num_samples, group=group,
                   tag=tag)


def sample(req: Request, response, correct: bool, tokenizer, logp=None) -> Sample:
    """A verified sample; its text is the decoded response (as the engine's is)."""
    response = list(response)
    policy_logp = np.asarray(logp if logp is not None else [-0.5] * len(response), np.float32)
    return Sample(request=req, response=response, logprobs=policy_logp - 0.25,
                  policy_logprobs=policy_logp, truncated=False,
                  text=tokenizer.decode(response, skip_special_tokens=True),
                  reward=float(correct), status="correct" if correct else "wrong")


def group(rec, responses, correct, tokenizer, name, tag="fresh", context=(1, 2, 3)):
    req = request(rec, len(responses), name, tag, context)
    return [sample(req, r, c, tokenizer) for r, c in zip(responses, correct)]


class FakeContext:
    """A StepContext whose services are recorded: the records drawn, the ids retired,
    and scores from `entropy_of(tokens, start)` (mean entropy of a response)."""

    def __init__(self, config, tokenizer, *, seed=0, entropy_of=None, records=None):
        self.drawn: list[int] = []
        self.retired: list[str] = []
        self.scored: list = []
        self._records = list(records if records is not None else [record(100 + i)
                                                                  for i in range(64)])
        self._entropy_of = entropy_of or (lambda tokens, start: 1.0)

        def draw(n):
            self.drawn.append(n)
            out, self._records = self._records[:n], self._records[n:]
            return out

        def score(sequences):
            self.scored.append(list(sequences))
            return [TokenScores(logprobs=np.full(len(t) - s, -1.0, np.float32),
                                mean_entropy=float(self._entropy_of(t, s)))
                    for t, s in sequences]

        self.ctx = StepContext(step=0, config=config, tokenizer=tokenizer,
                               rng=np.random.default_rng(seed), draw_records=draw,
                               retire=lambda ids: self.retired.extend(ids),
                               rollout=lambda requests: [], score=score)


def main(workdir: str, policy: str, steps: int) -> None:
    from rl_reason import run_setup, train
    run_setup.make_verifier = lambda verifier_config: HalfCorrectVerifier()
    c = tiny_config(policy, **{"method.mixing_threshold": 0.0, "train.num_steps": steps,
                               "train.eval_every": 0, "train.export_hf": True,
                               "train.checkpoint_every": 1})
    train.run(c, workdir)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
