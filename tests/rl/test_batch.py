import numpy as np

from rl_reason.protocol import Row
from rl_reason.rl.batch import bucket_rows, collate, split_minibatches


def row(n_context, n_response, adv, off_policy=False):
    n = n_context + n_response
    mask = np.r_[np.zeros(n_context), np.ones(n_response)].astype(np.float32)
    off = np.full(n, off_policy) if off_policy else None
    logp = np.full(n, -0.5, np.float32) if off_policy else None
    return Row(tokens=list(range(1, n + 1)), loss_mask=mask, advantage=adv,
               off_policy=off, behaviour_logp=logp)


def test_bucket_rows_rounds_to_power_of_two_multiples():
    assert [bucket_rows(n, 4) for n in (1, 4, 5, 8, 9, 17)] == [4, 4, 8, 8, 16, 32]


def test_collate_pads_and_aligns():
    b = collate([row(3, 2, 1.5), row(2, 6, -1.0, off_policy=True)], row_multiple=4,
                seq_bucket=4, pad_id=0)
    assert b["tokens"].shape == (4, 8)
    np.testing.assert_array_equal(b["valid"][0], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b["advantages"][1, :8], [-1.0] * 8)
    assert b["off_policy"][1].sum() == 8 and not b["off_policy"][0].any()
    assert b["behaviour_logp"][1, 0] == -0.5
    # Padding rows: nothing valid, nothing trained.
    assert not b["valid"][2:].any() and b["loss_mask"][2:].sum() == 0


def test_split_minibatches_is_a_permutation():
    b = collate([row(1, 1, float(i)) for i in range(8)], row_multiple=8, seq_bucket=2, pad_id=0)
    mbs = split_minibatches(b, 4, np.random.default_rng(0))
    assert len(mbs) == 4 and all(mb["tokens"].shape == (2, 2) for mb in mbs)
    seen = sorted(float(a) for mb in mbs for a in mb["advantages"][:, 0])
    assert seen == [float(i) for i in range(8)]
