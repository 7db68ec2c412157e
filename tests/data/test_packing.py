"""Packing warm-start conversations into training rows: trained tokens are exactly the
answers, long conversations get long rows on evenly spread steps."""

import numpy as np
import pytest

from rl_reason.data import packing, synthetic, templates, tokenizer_builder, warm_start


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = []
    for c in warm_start.warm_start_conversations(300, seed=0):
        corpus += [m["content"] for m in c.messages]
    return tokenizer_builder.build_tokenizer(corpus, str(tmp_path_factory.mktemp("tok")),
                                             vocab_size=400)


def test_segments_train_the_answer_after_its_prefix(tokenizer):
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    text = "7+5=13. Wait, 7+5=12. 12*3=36. 36-4=32. \\boxed{32}"
    conversation = warm_start.Conversation(
        tuple(templates.plain_prompt(problem.question) + [{"role": "assistant", "content": text}]),
        (False, True), "failure_continuation", prefix_chars=len("7+5=13."))
    segments = packing.conversation_segments(tokenizer, conversation)
    trained = "".join(piece for piece, t in segments if t)
    assert trained == " Wait, 7+5=12. 12*3=36. 36-4=32. \\boxed{32}" + tokenizer_builder.IM_END
    assert "".join(piece for piece, _ in segments).count("7+5=13.") == 1


def test_batches_have_fixed_shapes_and_spread_long_steps(tokenizer):
    def conversations(num, *, seed):
        return warm_start.warm_start_conversations(num, seed=seed, unboxed_share=0.5)

    batches = packing.build_batches(tokenizer, 12, 4, 128, seed=0, conversations=conversations)
    assert batches.num_steps == 12 and 0 < len(batches.long_steps) < 12
    shapes = [batches.batch(i)[0].shape for i in range(12)]
    assert all(shape in ((4, 128), (2, 256)) for shape in shapes)
    assert [i for i, shape in enumerate(shapes) if shape == (2, 256)] == sorted(batches.long_steps)
    gaps = np.diff(sorted(batches.long_steps))
    assert gaps.size == 0 or gaps.max() - gaps.min() <= 1
    for step in range(12):
        tokens, mask, segments, positions = batches.batch(step)
        # Positions restart with every segment; padding (segment 0) is never trained.
        assert (mask[segments == 0] == 0).all()
        for row_segments, row_positions in zip(segments, positions):
            for number in set(row_segments[row_segments > 0].tolist()):
                np.testing.assert_array_equal(row_positions[row_segments == number],
                                              np.arange((row_segments == number).sum()))
    assert batches.census["conversations"] == batches.num_conversations > 0
    with pytest.raises(ValueError, match="even"):
        packing.build_batches(tokenizer, 2, 3, 128, seed=0)
