"""The held-out evaluation of a run's starting policy, computed once for runs that
start alike.

Every arm of an experiment starts from one checkpoint with one seed, so their step-0
evaluations are the same computation (the sampler's output depends only on the
weights, the prompts, the settings and the rng): the first run stores its metrics,
generations and misleading prefixes under RL_REASON_CACHE/initial_eval/<key>/, and
later runs copy them into their own eval/ folder. The key digests everything the
evaluation reads: the start checkpoint's files (path, size, modification time), the
`eval` block, the held-out data keys, the effective response length, the verifier,
the seed, the compute dtype and the sampler (its batching and KV cache dtype: the
continuous batch draws a row beyond the first 256 with other keys than the chunked
static batch before it did).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from rl_reason.evaluation import misleading_prefix

METRICS_FILE = "metrics.json"
# data keys that decide the held-out records (run_setup.held_out_records)
_HELD_OUT_KEYS = ("train", "eval", "embedded_levels", "embedded_eval_levels",
                  "embedded_eval_size", "problem_key", "answer_key", "tfds_data_dir")


def cache_root() -> str:
    root = os.environ.get("RL_REASON_CACHE") or os.path.join("~", ".cache", "rl_reason")
    return os.path.join(os.path.expanduser(root), "initial_eval")


def key(config, model_path: str) -> str:
    files = []
    for name in sorted(os.listdir(model_path)):
        path = os.path.join(model_path, name)
        if os.path.isfile(path):
            st = os.stat(path)
            files.append((name, st.st_size, st.st_mtime_ns))
    d = config.data
    parts = dict(
        model=(os.path.realpath(model_path), files, config.model.dtype),
        eval=json.loads(config.eval.to_json_best_effort()),
        data={k: json.loads(json.dumps(d[k], default=list)) for k in _HELD_OUT_KEYS if k in d},
        max_new_tokens=config.eval.max_new_tokens or config.rollout.max_new_tokens,
        verifier=(config.verifier.name, config.verifier.timeout_s),
        seed=config.seed,
        sampler=("continuous", config.rollout.cache_dtype or config.model.dtype))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def load(config, model_path: str, eval_dir: str) -> dict | None:
    """The cached step-0 metrics, with its files copied into eval_dir; None on a miss."""
    folder = os.path.join(cache_root(), key(config, model_path))
    if not os.path.isfile(os.path.join(folder, METRICS_FILE)):
        return None
    os.makedirs(eval_dir, exist_ok=True)
    for name in os.listdir(folder):
        if name != METRICS_FILE:
            shutil.copyfile(os.path.join(folder, name), os.path.join(eval_dir, name))
    with open(os.path.join(folder, METRICS_FILE)) as f:
        return json.load(f)


def store(config, model_path: str, eval_dir: str, metrics: dict) -> None:
    """Publishes a step-0 evaluation (written under a temporary name, then renamed,
    so a killed run never leaves half an entry)."""
    folder = os.path.join(cache_root(), key(config, model_path))
    if os.path.isdir(folder):
        return
    os.makedirs(cache_root(), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=cache_root())
    try:
        for name in ("step_0.jsonl", misleading_prefix.PREFIXES_FILE):
            if os.path.isfile(os.path.join(eval_dir, name)):
                shutil.copyfile(os.path.join(eval_dir, name), os.path.join(staging, name))
        with open(os.path.join(staging, METRICS_FILE), "w") as f:
            json.dump(metrics, f)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, folder)
        except OSError:   # another run published the same entry first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
