"""Test-wide settings: 8 simulated CPU devices for the sharding tests, a persistent
compilation cache.

Set before JAX is imported anywhere; single-device code still runs on device 0.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The trainer tests build the same tiny step functions many times (each Trainer jits
# its own closures); a persistent compilation cache turns the repeats into loads.
# Subprocess tests inherit it through the environment.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Shared step-0 evaluations (rl_reason/evaluation/initial.py) stay inside the checkout.
os.environ.setdefault("RL_REASON_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "test_rl_reason"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import importlib.util  # noqa: E402

import pytest  # noqa: E402

PARITY_SKIP = ("needs torch (the transformers parity tests): pip install torch==2.13.0, "
               "then pip install -e '.[parity]'")


def pytest_collection_modifyitems(config, items):
    """Without torch (the `parity` extra) the tests marked `parity` skip, saying why."""
    if importlib.util.find_spec("torch") is not None:
        return
    skip = pytest.mark.skip(reason=PARITY_SKIP)
    for item in items:
        if "parity" in item.keywords:
            item.add_marker(skip)


def build_tiny_policy(path: str, seed: int = 0) -> str:
    """A tokenizer built from the embedded task and a small random qwen3 policy."""
    from rl_reason import models
    from rl_reason.data import synthetic, templates, tokenizer_builder

    records = synthetic.train_records(300, seed=seed)
    corpus = [r.problem for r in records] + [templates.plain_prompt(r.problem)[0]["content"]
                                             for r in records[:50]]
    tok = tokenizer_builder.build_tokenizer(corpus, path, vocab_size=320)
    config = models.ModelConfig(
        family="qwen3", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
        num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16, tie_embeddings=True,
        max_position_embeddings=512, eos_token_id=models.stop_token_ids(tok),
        pad_token_id=tok.pad_token_id)
    models.save(models.init(config, seed=seed), path)
    return path


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> str:
    return build_tiny_policy(str(tmp_path_factory.mktemp("tiny_policy")))


@pytest.fixture
def load_benchmark():
    """load_benchmark("sampler") imports benchmarks/sampler.py (scripts, not a package)."""
    import importlib.util
    import pathlib

    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(autouse=True, scope="module")
def release_compiled_executables():
    """Drop jax's in-memory compiled executables after each test module. One process
    runs the whole default suite; with the continuous-batching sampler's many shapes,
    the executables kept from ~650 tests made XLA abort or segfault while compiling
    (three runs in three, in whichever test came next). The persistent compilation cache
    above makes the recompiles cheap."""
    yield
    import jax
    jax.clear_caches()
