"""Probe prompts for the base statistics by prompt kind: every kind, the same problems,
prefixes cut where the kind says."""

import re

import numpy as np

from rl_reason.data import probes, synthetic, templates, warm_start

LINE = re.compile(r"(\d+)([-+*])(\d+)=(\d+)\.")


def test_every_kind_for_every_problem_with_its_answer():
    problems = synthetic.generate_problems("train", 12, levels=(2, 3), distinct=True)
    built = probes.build_probes(problems, seed=0, unboxed_share=0.5)
    assert [p.kind for p in built] == list(probes.KINDS) * len(problems)
    for probe in built:
        problem = problems[probe.problem]
        assert probe.answer == str(problem.answer)
        assert problem.question in "".join(m["content"] for m in probe.messages)
        assert probe.messages[-1]["role"] in ("user", "system") or probe.response_prefix
    assert probes.build_probes(problems, seed=0) == probes.build_probes(problems, seed=0)


def test_prompts_are_the_methods_own():
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    kinds = {p.kind: p for p in probes.probes_for(problem, 0, np.random.default_rng(0),
                                                   unboxed_share=0.5)}
    q = problem.question
    assert list(kinds["plain"].messages) == templates.plain_prompt(q)
    assert list(kinds["concise"].messages) == templates.concise_prompt(q)
    assert list(kinds["multi_attempt_first"].messages) == templates.multi_attempt_prompt(q, 3)
    assert kinds["hint"].messages[0]["content"].startswith(templates.plain_prompt(q)[0]["content"]
                                                           + "\nHint: these answers are incorrect: ")
    second = kinds["multi_attempt_second"].messages
    assert second[-1]["content"] == templates.attempt_feedback(2)
    assert ("\\boxed" in second[-2]["content"]) == kinds["multi_attempt_second"].context_boxed
    r3l = kinds["r3l_after_feedback"]
    extracted = re.search(r"\\boxed\{(\d+)\}", r3l.messages[-2]["content"])
    assert r3l.messages[-1]["content"] == templates.verifier_feedback(extracted and extracted.group(1))
    assert templates.GUIDANCE_HEADER in kinds["guided_retry"].messages[-1]["content"]


def test_continuation_prefixes():
    problems = synthetic.generate_problems("train", 40, levels=(2, 3), distinct=True)
    built = probes.build_probes(problems, seed=1)
    for probe in built:
        problem = problems[probe.problem]
        if probe.kind == "continuation_correct":
            # Inside the working of the correct solution, never in its stated result.
            assert problem.solution().startswith(probe.response_prefix)
            assert "\\boxed" not in probe.response_prefix and probe.response_prefix
        elif probe.kind == "continuation_failure":
            # Ends right after the first (and only) miscomputed line.
            lines = LINE.findall(probe.response_prefix)
            a, op, b, c = lines[-1]
            assert synthetic.apply_op(int(a), op, int(b)) != int(c)
            assert all(synthetic.apply_op(int(x), o, int(y)) == int(z) for x, o, y, z in lines[:-1])
            assert probe.response_prefix.endswith(f"{a}{op}{b}={c}.")
        else:
            assert probe.response_prefix == ""
    guided = [p for p in built if p.kind == "guided_retry"]
    replayed = {sum(m["role"] == "assistant" for m in p.messages) for p in guided}
    assert replayed == set(range(warm_start.R3L_ATTEMPTS))
