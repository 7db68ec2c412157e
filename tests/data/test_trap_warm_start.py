"""The trap world's warm-start data: what an informed answer does, and that the dial
turns it off."""

import re

import numpy as np
import pytest

from rl_reason.data import templates, traps
from rl_reason.data import trap_warm_start as tw
from rl_reason.data.traps import CORRECT
from rl_reason.data.warm_start import R3L_ATTEMPTS

BOX = re.compile(r"\\boxed\{(-?\d+)\}")


def boxed(text: str) -> int | None:
    found = BOX.findall(text)
    return int(found[-1]) if found else None


def problems(n=60, levels=(2, 3, 4), seed=0):
    return traps.generate_problems("train", n, seed=seed, levels=levels)


@pytest.mark.parametrize("kind", ["multi_attempt", "r3l_episode"])
def test_an_informed_answer_after_feedback_differs_from_every_rejected_one(kind):
    rng = np.random.default_rng(0)
    seen_feedback = 0
    for p in problems():
        c = tw.conversation(p, kind, rng, skill=1.0)
        rejected = [boxed(m["content"]) for m in c.messages[:-1] if m["role"] == "assistant"]
        answer = boxed(c.messages[-1]["content"])
        if rejected:
            seen_feedback += 1
            assert answer == p.answer and answer not in rejected
            assert all(r != p.answer for r in rejected)   # the shown attempts did fail
    assert seen_feedback > 20


def test_without_skill_answers_after_a_failure_keep_the_plain_trap_rate():
    rng = np.random.default_rng(1)
    trapped = []
    for p in traps.generate_problems("train", 600, seed=2, levels=(3,)):
        c = tw.conversation(p, "hint", rng, skill=0.0)
        trapped.append(boxed(c.messages[-1]["content"]) == p.trap_answer)
    assert np.mean(trapped) == pytest.approx(traps.TRAP_RATES[3], abs=0.06)


def test_a_failed_episodes_root_is_its_first_trap_attempt():
    rng = np.random.default_rng(2)
    roots = []
    for p in problems(200):
        e = tw.failed_episode(p, rng)
        answers = [a.answer for a in e.failed]
        assert len(answers) == R3L_ATTEMPTS and p.answer not in answers
        trapped = [a.trapped for a in e.failed]
        assert e.root == (trapped.index(True) if any(trapped) else 0)
        assert trapped == [a == p.trap_answer for a in answers]
        roots.append(e.root)
    assert set(roots) == set(range(R3L_ATTEMPTS))


def test_an_informed_reflection_names_the_step_where_the_first_error_is():
    rng = np.random.default_rng(3)
    kinds = set()
    for p in problems(60):
        e = tw.failed_episode(p, rng)
        report = tw.reflection_report(e, rng, informed=True)
        assert report.retry_from_step == e.root
        assert report.outcome == templates.OUTCOME_FAILURE and tw.is_informative(report)
        root = e.failed[e.root]
        if root.trapped:
            assert report.suggestion == tw.TRAP_SUGGESTION and p.expression in report.root_cause
        else:
            line = traps.working(p, CORRECT)[root.slip[0]]
            assert f"{line.left}{line.op}{line.right}={line.value + root.slip[1]} is wrong" \
                in report.root_cause
        kinds.add(root.trapped)
        parsed = templates.parse_reflection_report(
            templates.format_reflection_report(report), R3L_ATTEMPTS)
        assert parsed == report
    assert kinds == {True, False}


def test_uninformed_reflections_name_random_steps_with_a_generic_cause():
    rng = np.random.default_rng(4)
    steps = []
    for p in problems(200):
        report = tw.reflection_report(tw.failed_episode(p, rng), rng, informed=False)
        assert not tw.is_informative(report) and report.root_cause == tw.GENERIC_CAUSE
        steps.append(report.retry_from_step)
    assert set(steps) == set(range(R3L_ATTEMPTS))


def test_guided_retries_follow_informative_guidance_only():
    rng = np.random.default_rng(5)
    seen = set()
    for p in problems(80, levels=(4,)):
        for skill in (0.0, 1.0):
            c = tw.conversation(p, "guided_retry", rng, skill=skill)
            guided = c.messages[-2]["content"]
            informative = tw.GENERIC_CAUSE not in guided
            assert informative == (skill == 1.0)
            if informative:
                assert c.messages[-1]["content"] == p.solution(CORRECT)
            seen.add((skill, boxed(c.messages[-1]["content"]) == p.trap_answer))
            # The replayed attempts are those before the step the report names.
            replayed = sum(m["role"] == "assistant" for m in c.messages[:-1])
            assert replayed == c.retry_from_step
    assert (0.0, True) in seen and (1.0, True) not in seen   # uninformed retries still trap


def test_failure_prefix_ends_after_the_mistake_and_an_informed_repair_is_right():
    rng = np.random.default_rng(6)
    for p in problems(60):
        for informed in (True, False):
            text, cut = tw.failure_continuation(p, rng, informed)
            prefix = text[:cut]
            assert "boxed" not in prefix
            # The prefix is a wrong working: it is no prefix of the right one...
            assert not p.solution(CORRECT).startswith(prefix)
            # ...and the informed continuation repairs it, the other carries it on.
            if informed:
                assert boxed(text) == p.answer and "Wait," in text[cut:]
            else:
                assert boxed(text) != p.answer and "Wait" not in text


def test_conversations_are_deterministic_and_cover_every_kind():
    a = tw.conversations(300, seed=7, skill=0.5)
    b = tw.conversations(300, seed=7, skill=0.5)
    assert [c.messages for c in a] == [c.messages for c in b]
    assert {c.kind for c in a} == set(tw.KINDS)
    with pytest.raises(ValueError, match="skill"):
        tw.conversations(3, skill=1.5)
