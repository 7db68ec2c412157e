"""Checkpoint round trips, keep-K, crash and corruption handling, mesh changes."""

import dataclasses
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rl_reason.checkpoint import (Checkpointer, CheckpointError, decode_method_state,
                                  encode_method_state)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    params: dict
    opt_state: optax.OptState
    rng: jax.Array        # typed key
    rng_data: jax.Array   # raw uint32 key data, the other common convention
    step: jax.Array


def _mesh(shape, names):
    return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), names)


def _param_specs(fsdp="fsdp"):
    return {"embed": P(fsdp, None), "layers": {"w": P(None, fsdp, None)}, "norm": P()}


def _train_state(mesh) -> TrainState:
    rng = np.random.default_rng(0)
    params = {
        "embed": rng.normal(size=(16, 8)).astype(np.float32),
        "layers": {"w": rng.normal(size=(2, 8, 16)).astype(jnp.bfloat16)},
        "norm": np.linspace(0.5, 1.5, 8, dtype=np.float32),
    }
    params = jax.tree.map(lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec)),
                          params, _param_specs())
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))

    @jax.jit  # one compile instead of many eager sharded ops (slow on CPU)
    def one_update(params):
        grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
        # So the moments and count are not their initial values.
        return optimizer.update(grads, optimizer.init(params), params)[1]

    return TrainState(params, one_update(params), jax.random.key(7),
                      jax.random.key_data(jax.random.PRNGKey(3)), jnp.int32(5))


def _abstract(state: TrainState, mesh, param_specs) -> TrainState:
    """What a trainer builds for restore: shapes and dtypes of its fresh state, with
    the shardings of the *current* mesh (params' specs for the optimizer moments)."""
    replicated = NamedSharding(mesh, P())
    spec_of = {jax.tree_util.keystr(k): s for k, s in
               jax.tree_util.tree_flatten_with_path(
                   param_specs, is_leaf=lambda x: isinstance(x, P))[0]}

    def one(path, x):
        keystr = jax.tree_util.keystr(path)
        spec = next((s for k, s in spec_of.items() if keystr.endswith(k) and
                     ("params" in keystr or "mu" in keystr or "nu" in keystr)), None)
        sharding = NamedSharding(mesh, spec) if spec is not None else replicated
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(one, state)


def _as_numpy(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def _assert_states_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(_as_numpy(g), _as_numpy(w))


def _assert_exactly_equal(got, want, where="method_state"):
    """Same containers, same scalar/array types and dtypes, same values."""
    assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            _assert_exactly_equal(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_exactly_equal(g, w, f"{where}[{i}]")
    elif isinstance(want, (np.ndarray, np.generic)):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, float) and np.isnan(want):
        assert np.isnan(got), where
    else:
        assert got == want, where


def _method_state():
    rng = np.random.default_rng(0)
    lengths = [3, 0, 7, 1]
    return {
        "buffer": {
            "question_ids": np.array([11, 42, 42, 7], np.int64),
            "tokens": [rng.integers(0, 100, n).astype(np.int32) for n in lengths],
            "logprobs": [-rng.random(n).astype(np.float32) for n in lengths],
            "texts": ["2+2=\\boxed{4}", "", "ünïcode ✓", "x"],
            "answers": np.array(["4", "12", "-1"]),
        },
        "per_question": {42: {"seen": 3, "correct_rate": 0.25}, 7: {"seen": 1,
                                                                      "correct_rate": 0.0}},
        "schedule": (np.float32(0.5), np.int64(3), True, None, float("nan")),
        "tags": [b"\x00raw", "fresh"],
        "empty": {"list": [], "dict": {}, "tuple": ()},
    }


@pytest.fixture
def fsdp_mesh():
    return _mesh((8,), ("fsdp",))


def test_round_trip_restores_train_state_extra_and_method_state_exactly(tmp_path, fsdp_mesh):
    state, method_state = _train_state(fsdp_mesh), _method_state()
    extra = {"data": {"epoch": 1, "position": 37}, "config": {"lr": 1e-6, "method": "grpo"},
             "metrics": {"reward_mean": np.float32(0.5)}}
    with Checkpointer(tmp_path / "ckpt", save_every=10) as ckpt:
        assert ckpt.save(10, state, extra, method_state=method_state)
        abstract = _abstract(state, fsdp_mesh, _param_specs())
        got_state, got_extra, got_method = ckpt.restore(abstract_train_state=abstract)

    _assert_states_equal(got_state, state)
    assert isinstance(got_state, TrainState)
    for got, want in zip(jax.tree.leaves(got_state), jax.tree.leaves(abstract)):
        assert got.sharding == want.sharding
    assert got_extra == {"data": {"epoch": 1, "position": 37},
                         "config": {"lr": 1e-6, "method": "grpo"},
                         "metrics": {"reward_mean": 0.5}}
    _assert_exactly_equal(got_method, method_state)


def test_save_snapshots_inputs_so_caller_may_mutate_and_donate(tmp_path, fsdp_mesh):
    state, method_state = _train_state(fsdp_mesh), _method_state()
    want_state = jax.tree.map(_as_numpy, state)
    want_method = decode_method_state(*encode_method_state(method_state))
    extra = {"position": 1}
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        abstract = _abstract(state, fsdp_mesh, _param_specs())
        assert ckpt.save(1, state, extra, method_state=method_state)
        # What a trainer does right after save returns: donate the state to the next
        # step and keep appending to its buffers.
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        method_state["buffer"]["tokens"][0][:] = -1
        method_state["buffer"]["texts"].append("new")
        extra["position"] = 2
        got_state, got_extra, got_method = ckpt.restore(abstract_train_state=abstract)
    for got, want in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
        np.testing.assert_array_equal(_as_numpy(got), want)
    assert got_extra == {"position": 1}
    _assert_exactly_equal(got_method, want_method)


def test_should_save_every_n_and_keep_last_k(tmp_path):
    state = {"w": jnp.arange(4.0)}
    with Checkpointer(tmp_path, keep=2, save_every=2) as ckpt:
        saved = [step for step in range(1, 8)
                 if ckpt.should_save(step) and ckpt.save(step, state, {"step": step})]
        assert saved == [2, 4, 6]
        assert not ckpt.save(7, state, {})            # not due and not forced
        assert ckpt.save(7, state, {}, force=True)    # end of run
        assert not ckpt.save(7, state, {}, force=True)  # already saved: skipped, no error
        ckpt.wait()
        assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["6", "7"]


def test_restore_onto_a_different_mesh(tmp_path, fsdp_mesh):
    state = _train_state(fsdp_mesh)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(3, state, {}, method_state={})
        ckpt.wait()
    # A fresh process-like restore: new Checkpointer, other layouts.
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        mesh_2x4 = _mesh((2, 4), ("data", "fsdp"))
        specs_2x4 = {"embed": P("fsdp", "data"), "layers": {"w": P("data", "fsdp", None)},
                     "norm": P("fsdp")}
        abstract = _abstract(state, mesh_2x4, specs_2x4)
        got, _, _ = ckpt.restore(abstract_train_state=abstract)
        _assert_states_equal(got, state)
        assert got.params["embed"].sharding.spec == P("fsdp", "data")
        assert got.params["embed"].sharding.mesh.shape == {"data": 2, "fsdp": 4}
        assert got.opt_state[1][0].mu["layers"]["w"].sharding.spec == P("data", "fsdp", None)

        one_device = _mesh((1,), ("fsdp",))
        got, _, _ = ckpt.restore(3, abstract_train_state=_abstract(state, one_device,
                                                                   _param_specs()))
        _assert_states_equal(got, state)
        assert got.params["embed"].sharding.mesh.devices.size == 1


def test_missing_directory_is_a_fresh_start(tmp_path):
    with Checkpointer(tmp_path / "new" / "ckpt", save_every=5) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        assert ckpt.restore(abstract_train_state={"w": jax.ShapeDtypeStruct((2,), jnp.float32)}) \
            is None


def test_unwritable_directory_fails_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="a_file/ckpt.*not writable"):
        Checkpointer(blocker / "ckpt")


def test_half_written_checkpoint_is_never_latest(tmp_path):
    state = {"w": jnp.arange(4.0)}
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(2, state, {"step": 2})
    # What a process killed mid-save leaves behind: Orbax's temporary directory.
    partial = tmp_path / "3.orbax-checkpoint-tmp-1700000000000"
    (partial / "train_state").mkdir(parents=True)
    (partial / "train_state" / "manifest.ocdbt").write_bytes(b"\x00partial")
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.all_steps() == [2]
        _, extra, _ = ckpt.restore(abstract_train_state=jax.eval_shape(lambda: state))
        assert extra == {"step": 2}
        assert not partial.exists()   # cleaned up, so step 3 can be saved again
        assert ckpt.save(3, state, {"step": 3})


def test_exit_without_close_still_completes_the_async_save(tmp_path):
    script = textwrap.dedent(f"""
        import jax.numpy as jnp
        from rl_reason.checkpoint import Checkpointer
        ckpt = Checkpointer({str(tmp_path)!r}, save_every=1)
        ckpt.save(1, {{"w": jnp.arange(1000.0)}}, {{"done": True}}, method_state=[1, 2])
        # no wait(), no close(): the interpreter exits right away
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120,
                   capture_output=True)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        abstract = {"w": jax.ShapeDtypeStruct((1000,), jnp.float32)}
        state, extra, method_state = ckpt.restore(abstract_train_state=abstract)
    np.testing.assert_array_equal(state["w"], np.arange(1000.0))
    assert extra == {"done": True} and method_state == [1, 2]


def _corrupt(step_dir: pathlib.Path):
    """Simulates damage after the fact: the array data of the train state is gone."""
    data_files = [p for p in (step_dir / "train_state").rglob("*")
                  if p.is_file() and p.parent.name == "d"]
    assert data_files
    for p in data_files:
        p.write_bytes(b"garbage")


def test_unreadable_latest_raises_naming_path_or_falls_back_when_asked(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"w": jnp.full((4,), float(step))}, {"step": step},
                      method_state={"n": step})
    _corrupt(tmp_path / "2")
    abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(CheckpointError, match=f"{tmp_path}/2 is unreadable.*"
                                                  "fallback_to_previous=True"):
            ckpt.restore(abstract_train_state=abstract)
        assert ckpt.latest_step() == 2   # nothing was moved without being asked

        with pytest.warns(UserWarning, match="falling back to step 1"):
            state, extra, method_state = ckpt.restore(abstract_train_state=abstract,
                                                      fallback_to_previous=True)
        np.testing.assert_array_equal(state["w"], np.ones(4))
        assert extra == {"step": 1} and method_state == {"n": 1}
        assert ckpt.latest_step() == 1
        moved = [p.name for p in tmp_path.iterdir() if p.name.startswith("2.unreadable-")]
        assert len(moved) == 1   # kept for inspection, not deleted
        assert ckpt.save(2, {"w": jnp.zeros(4)}, {"step": 2})   # the step is free again


def test_unreadable_only_checkpoint_is_never_silently_dropped(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, {"w": jnp.ones(4)}, {}, method_state={"buffer": [np.arange(3)]})
    (tmp_path / "1" / "method_state" / "arrays.npz").write_bytes(b"truncated")
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(CheckpointError, match=f"{tmp_path}/1 is unreadable.*only checkpoint"):
            ckpt.restore(abstract_train_state={"w": jax.ShapeDtypeStruct((4,), jnp.float32)},
                         fallback_to_previous=True)
        assert ckpt.latest_step() == 1


def test_mismatched_train_state_raises_and_does_not_fall_back(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"params": {"w": jnp.ones((4, 2))}}, {})
    wrong = {"params": {"w": jax.ShapeDtypeStruct((8, 2), jnp.float32),
                        "b": jax.ShapeDtypeStruct((2,), jnp.float32)}}
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(CheckpointError, match=r"does not match.*missing params/b.*"
                                                  r"params/w: saved \(4, 2\), wanted \(8, 2\)"):
            ckpt.restore(abstract_train_state=wrong, fallback_to_previous=True)
        assert ckpt.all_steps() == [1, 2]


def test_mismatch_in_a_realistic_train_state_names_only_what_changed(tmp_path, fsdp_mesh):
    state = _train_state(fsdp_mesh)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, state, {})
        abstract = _abstract(state, fsdp_mesh, _param_specs())
        abstract.params["norm"] = jax.ShapeDtypeStruct((4,), jnp.float32)
        with pytest.raises(CheckpointError,
                           match=r"\(params/norm: saved \(8,\), wanted \(4,\)\);"):
            ckpt.restore(abstract_train_state=abstract)


def test_restore_of_a_step_that_does_not_exist_lists_the_available_ones(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(4, {"w": jnp.ones(2)}, {})
        with pytest.raises(CheckpointError, match=r"no checkpoint for step 3 .*\[4\]"):
            ckpt.restore(3, abstract_train_state={"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def test_values_that_cannot_be_saved_exactly_fail_before_writing(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(TypeError, match=r"method_state\['buffer'\]\[0\].*object"):
            ckpt.save(1, {"w": jnp.ones(2)}, {}, method_state={"buffer": [np.array([1, "a"],
                                                                                   object)]})
        with pytest.raises(TypeError, match=r"method_state\['s'\].*set"):
            ckpt.save(1, {"w": jnp.ones(2)}, {}, method_state={"s": {1, 2}})
        with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
            ckpt.save(1, {"w": jnp.ones(2)}, {"f": print})
        ckpt.wait()
        assert ckpt.all_steps() == [] and not (tmp_path / "1").exists()
