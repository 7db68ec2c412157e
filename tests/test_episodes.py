"""The shared episode machinery, by hand: attempts cut at their first box at the token
level, feedback blocks from the chat template, masks, the shared budget, replay."""

import math

import numpy as np
import pytest

from rl_reason import models
from rl_reason.data import record as record_lib
from rl_reason.data import templates
from rl_reason import episodes
from rl_reason.episodes import ChatTurns, Episode, attempt_length, new_attempt

RECORD = record_lib.Record(problem="What is 3+4?", answer="7",
                           id=record_lib.problem_id("What is 3+4?"), source="test")


class PieceTokenizer:
    """Each id decodes to a fixed string; id 0 is a special end-of-turn token. Counts
    its decodes."""

    def __init__(self, pieces):
        self.pieces = pieces
        self.decodes = 0

    def decode(self, ids, skip_special_tokens=True):
        self.decodes += 1
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i == 0))


PIECES = ["<eot>", "x=3", ". ", "\\boxed{", "3", "}.", " more", " \\boxed{4}", "}"]


def test_an_attempt_is_cut_after_its_first_box_at_the_token_level():
    tok = PieceTokenizer(PIECES)
    # "x=3. \boxed{3}. more \boxed{4}<eot>": the first box closes inside the token "}.",
    # so the attempt is the first 5 tokens; the text scored stops at the brace.
    assert attempt_length(tok, [1, 2, 3, 4, 5, 6, 7, 0]) == (5, "x=3. \\boxed{3}")
    # Nothing but the end-of-turn after the box: the whole response, end-of-turn kept.
    assert attempt_length(tok, [1, 2, 3, 4, 8, 0]) == (6, "x=3. \\boxed{3}")
    # No box: everything.
    assert attempt_length(tok, [1, 2, 6]) == (3, "x=3.  more")


def test_the_cut_takes_logarithmically_many_decodes():
    tok = PieceTokenizer(PIECES)
    response = [3, 4, 8] + [6] * 1000
    tok.decodes = 0
    assert attempt_length(tok, response) == (3, "\\boxed{3}")
    # One decode of the whole response, then a binary search over 1..1003.
    assert tok.decodes <= 1 + math.ceil(math.log2(len(response))) + 1


def test_new_attempt_flags():
    cut = new_attempt([1, 2, 3, 4, 5, 6, 7, 0], 5, "x", truncated=False, status="wrong",
                      extracted="3", policy_logprobs=np.arange(8.0))
    assert (cut.ids, cut.generated, cut.closed, cut.truncated) == ((1, 2, 3, 4, 5), 8, False, False)
    assert list(cut.policy_logprobs) == [0, 1, 2, 3, 4] and cut.answered
    ended = new_attempt([1, 2, 3, 4, 8, 0], 6, "x", truncated=False, status="correct",
                        extracted="3")
    assert ended.closed and not ended.truncated and ended.correct
    out_of_tokens = new_attempt([1, 2, 6], 3, "x", truncated=True, status="no_answer",
                                extracted=None)
    assert out_of_tokens.truncated and not out_of_tokens.closed and not out_of_tokens.answered
    # A box before the budget ran out: an answered attempt, not an out-of-tokens one.
    boxed = new_attempt([3, 4, 5, 6, 6], 3, "x", truncated=True, status="wrong", extracted="3")
    assert not boxed.truncated and not boxed.closed


@pytest.fixture(scope="module")
def tok(tiny_policy):
    return models.load_tokenizer(tiny_policy)


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_feedback_block_is_cut_from_the_chat_template(tok):
    turns = ChatTurns(tok)
    messages = templates.multi_attempt_prompt(RECORD.problem, 2)
    feedback = templates.attempt_feedback(1)
    block = turns.feedback(messages, {"role": "user", "content": feedback})
    assert tok.decode(block, skip_special_tokens=False) == (
        f"<|im_end|>\n<|im_start|>user\n{feedback}<|im_end|>\n<|im_start|>assistant\n")
    # The prompt, an attempt and the block render the conversation the template renders.
    attempt = "3+4=8. \\boxed{8}"
    ids = turns.prompt(messages) + encode(tok, attempt) + block
    rendered = templates.render_prompt(tok, messages + [
        {"role": "assistant", "content": attempt}, {"role": "user", "content": feedback}])
    assert tok.decode(ids, skip_special_tokens=False) == rendered


def _attempt(tok, text, *, stop, status, truncated=False, extracted=None, budget=None):
    """An attempt as the sampler would give it: text (+ <|im_end|>), cut to `budget`."""
    ids = encode(tok, text) + ([tok.convert_tokens_to_ids("<|im_end|>")] if stop else [])
    if budget is not None and len(ids) > budget:
        ids, truncated = ids[:budget], True
    n, scored = attempt_length(tok, ids)
    return ids, new_attempt(ids, n, scored, truncated=truncated, status=status,
                            extracted=extracted)


def test_episode_segments_masks_and_the_shared_budget(tok):
    turns = ChatTurns(tok)
    messages = templates.multi_attempt_prompt(RECORD.problem, 3)
    episode = Episode.start(RECORD, messages, turns, budget=40, max_attempts=3, group="g")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    prompt = turns.prompt(messages)
    assert episode.context() == prompt and episode.remaining == 40

    # Attempt 1: "3+4=8. \boxed{8}" (11 tokens), then " so" (3 tokens) and the end of the
    # turn, which are cut: 11 tokens charged, the block's own <|im_end|> closes it.
    sampled_1, first = _attempt(tok, "3+4=8. \\boxed{8} so", stop=True, status="wrong",
                                extracted="8")
    assert (len(sampled_1), len(first.ids), first.closed) == (15, 11, False)
    episode.add_attempt(first)
    assert episode.awaiting_feedback and episode.remaining == 29
    with pytest.raises(ValueError, match="awaits feedback"):
        episode.request()
    block = turns.feedback(messages, {"role": "user", "content": templates.attempt_feedback(2)})
    assert block[0] == end
    episode.add_feedback(block)
    request = episode.request(tag="fresh")
    assert request.context == prompt + sampled_1[:11] + block
    assert (request.max_new_tokens, request.group, request.answer_at_first_box) == (29, "g", True)
    assert request.meta["episode"] is episode and request.meta["attempt"] == 1

    # Attempt 2 ends its own turn after the box: its sampled <|im_end|> is kept, moved to
    # the (masked) feedback segment in place of the block's copy. 12 tokens charged.
    sampled_2, second = _attempt(tok, "3+4=6. \\boxed{6}", stop=True, status="wrong",
                                 extracted="6")
    assert second.closed and len(second.ids) == 12
    episode.add_attempt(second)
    block_2 = turns.feedback(messages, {"role": "user", "content": templates.attempt_feedback(1)})
    episode.add_feedback(block_2)
    assert episode.remaining == 17
    assert [(len(s.ids), s.trained, s.attempt) for s in episode.segments] == [
        (11, True, 0), (len(block), False, 0), (11, True, 1), (len(block_2), False, 1)]
    assert episode.segments[3].ids[0] == sampled_2[-1] == end

    # Attempt 3 runs out of the 17 tokens left mid-attempt: no answer, episode over.
    sampled_3, third = _attempt(tok, "3+4 is what I will now work out", stop=False,
                                status="no_answer", budget=episode.remaining)
    assert third.truncated and len(third.ids) == 17
    episode.add_attempt(third)
    assert episode.done and episode.out_of_budget and not episode.solved
    assert episode.remaining == 0

    # The row: the ids exactly as sampled, feedback (with the closing end-of-turn of
    # attempt 2) untrained, every attempt token trained with the episode's advantage.
    row = episode.row(0.5)
    assert row.tokens == prompt + sampled_1[:11] + block + sampled_2 + block_2[1:] + sampled_3
    expected = np.concatenate([np.zeros(len(prompt)), np.ones(11), np.zeros(len(block)),
                               np.ones(11), np.zeros(len(block_2)), np.ones(17)])
    np.testing.assert_array_equal(row.loss_mask, expected)
    assert row.advantage == 0.5 and row.group == "g"
    # Pivotal credit (R3L): the first k attempts untrained.
    pivotal = episode.loss_mask(first_trained_attempt=2)
    assert pivotal.sum() == 17 and pivotal[-17:].all()
    assert episode.row(0.5, trained=False).loss_mask.sum() == 0


def test_attempts_over_the_budget_and_after_the_end_are_refused(tok):
    turns = ChatTurns(tok)
    episode = Episode.start(RECORD, templates.plain_prompt(RECORD.problem), turns, budget=8,
                            max_attempts=2)
    with pytest.raises(ValueError, match="name the episode's group"):
        episode.request()
    _, long = _attempt(tok, "3+4=7. \\boxed{7}", stop=True, status="correct")
    with pytest.raises(ValueError, match="12 tokens with 8 of the budget left"):
        episode.add_attempt(long)
    _, short = _attempt(tok, "\\boxed{7}", stop=True, status="correct", extracted="7")
    episode.add_attempt(short)
    assert episode.solved and episode.done and not episode.awaiting_feedback
    with pytest.raises(ValueError, match="finished"):
        episode.add_attempt(short)
    with pytest.raises(ValueError, match="no failed attempt"):
        episode.add_feedback([1, 2])


def test_an_episode_ends_after_its_last_attempt(tok):
    turns = ChatTurns(tok)
    episode = Episode.start(RECORD, templates.plain_prompt(RECORD.problem), turns, budget=64,
                            max_attempts=1)
    _, wrong = _attempt(tok, "\\boxed{8}", stop=True, status="wrong", extracted="8")
    episode.add_attempt(wrong)
    assert episode.done and not episode.out_of_budget
    # A final failed attempt is followed by nothing: its end-of-turn stays trained.
    assert episode.row(1.0).loss_mask.sum() == len(wrong.ids)


def test_replay_copies_the_first_k_attempts_and_their_feedback(tok):
    turns = ChatTurns(tok)
    messages = templates.plain_prompt(RECORD.problem)
    episode = Episode.start(RECORD, messages, turns, budget=64, max_attempts=3, group="g")
    contexts = []
    for text, answer in (("\\boxed{8}", "8"), ("\\boxed{9}", "9")):
        contexts.append(episode.context())
        _, attempt = _attempt(tok, text, stop=True, status="wrong", extracted=answer)
        episode.add_attempt(attempt)
        episode.add_feedback(turns.feedback(
            messages, {"role": "user", "content": templates.verifier_feedback(answer)}))
    contexts.append(episode.context())
    for k in range(3):
        replayed = episode.replay(k)
        assert replayed.context() == contexts[k]
        assert replayed.attempts == episode.attempts[:k] and replayed.group == ""
        assert replayed.remaining == 64 - sum(len(a.ids) for a in episode.attempts[:k])
        replayed.group = "retry"
        guided = contexts[k] + [5, 6]
        request = replayed.request(context=guided)
        assert request.context == guided and request.meta["attempt"] == k
    _, last = _attempt(tok, "\\boxed{7}", stop=True, status="correct", extracted="7")
    episode.add_attempt(last)
    with pytest.raises(ValueError, match="attempt 2 has no feedback"):
        episode.replay(3)


def test_episodes_of_samples_in_first_seen_order(tok):
    turns = ChatTurns(tok)
    a, b = (Episode.start(RECORD, templates.plain_prompt(RECORD.problem), turns, budget=8,
                          max_attempts=1, group=g) for g in ("a", "b"))

    class FakeSample:
        def __init__(self, request):
            self.request = request

    samples = [FakeSample(b.request()), FakeSample(a.request()), FakeSample(b.request())]
    assert episodes.episodes_of(samples) == [b, a]
