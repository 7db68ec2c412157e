"""The default run's step-0 held-out evaluation with the continuous batch and with the
static batch (`continuous=False`): the same metrics, the same responses.

    python benchmarks/sampler_heldout.py [--out DIR] [--rounds 1]

Loads the default config (configs/grpo.py) and its base policy, then runs the
trainer's held-out evaluation (evaluate.held_out_metrics: greedy accuracy, avg@k,
pass@k, maj@k at the config's eval settings, with the run's step-0 evaluation key)
once with sampling.generate as shipped (continuous batching, eval.batch_size slots)
and once with every call made with continuous=False. Prints each metric set, the
wall time of each, and how many responses are identical; writes DIR/results.json and
each evaluation's responses (DIR/<sampler>/step_0.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import grpo  # noqa: E402
from rl_reason import evaluate as evaluate_lib, models, run_setup, sampling, sharding  # noqa: E402
from rl_reason.evaluation import session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/sampler_heldout")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    config = grpo.get_config("")
    path = run_setup.policy_path(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    model = run_setup.load_policy(path, config, mesh)
    tokenizer = run_setup.load_tokenizer_for(path)
    records = run_setup.held_out_records(config)
    verifier = run_setup.make_verifier(config.verifier)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10 ** 9)
    shipped = sampling.generate

    def static(*a, **k):
        return shipped(*a, **dict(k, continuous=False))

    print(f"policy {path}; {len(records)} held-out problems; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    try:
        for round_ in range(args.rounds):
            for name, generate in (("continuous", shipped), ("static", static)):
                session.sampling.generate = generate
                start = time.perf_counter()
                metrics = evaluate_lib.held_out_metrics(
                    model, tokenizer, records, config, rng=rng, mesh=mesh, verifier=verifier,
                    stop_ids=models.stop_token_ids(tokenizer),
                    pad=models.pad_token_id(tokenizer),
                    eval_dir=os.path.join(args.out, name), step=0)
                seconds = time.perf_counter() - start
                results.setdefault(name, []).append(dict(metrics, wall_s=seconds))
                print(name, round_, f"{seconds:.0f} s",
                      {k: round(v, 4) for k, v in metrics.items()
                       if any(s in k for s in ("accuracy", "avg@", "pass@", "maj@"))},
                      flush=True)
    finally:
        session.sampling.generate = shipped
    responses = {name: [json.loads(line)["response"] for line in
                        open(os.path.join(args.out, name, "step_0.jsonl"))]
                 for name in ("continuous", "static")}
    same = sum(a == b for a, b in zip(responses["continuous"], responses["static"]))
    print(f"identical responses: {same} of {len(responses['static'])}; load average "
          f"{os.getloadavg()[0]:.2f}")
    results.update(identical_responses=same, responses=len(responses["static"]), policy=path)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
