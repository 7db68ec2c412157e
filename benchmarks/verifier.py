"""Verifier throughput: math-verify serially in-process vs the worker-pool stage.

    python benchmarks/verifier.py [--workers=2] [--num_responses=2000]

Builds responses shaped like RL rollouts (a few hundred characters of reasoning,
then a \\boxed{} answer: integers, fractions, expressions, sets, intervals; right
answers in equivalent forms and wrong ones; 8 samples per problem as in a GRPO
group), scores them with the same scoring function in this process and through a
MathVerifier with N workers, checks both agree, and prints items/s and the
speed-up against the target of 0.8 x workers. Worker start-up is excluded (the
stage is started once per run) and both paths first score --warmup responses of
another seed (workers persist across training steps, so the steady state is what
counts); each worker parses each gold answer once, as in training.

Wall-clock speed-up needs idle cores: the load average is printed, and CPU seconds
per item are shown as well, since they are comparable even on a busy machine.
"""

import argparse
import os
import random
import time

import psutil

from rl_reason.verifiers import MathVerifier, count_statuses
from rl_reason.verifiers.math_task import score

# (gold, equivalent forms, wrong forms)
_ANSWER_KINDS = [
    lambda r: (str(n := r.randint(2, 999)), [str(n), f"{n}.0", f"x = {n}"], [str(n + 1), str(-n)]),
    lambda r: _fraction(r),
    lambda r: _expression(r),
    lambda r: _set(r),
    lambda r: _interval(r),
    lambda r: ("3\\sqrt{2}", ["\\sqrt{18}", "3\\sqrt{2}", "3 \\sqrt 2"], ["2\\sqrt{3}", "\\sqrt{6}"]),
]

_REASONING = [
    "First, we rewrite the equation so that all terms are on one side. ",
    "Substituting the value back into the original expression gives ",
    "By the AM-GM inequality, the minimum is attained when both terms are equal. ",
    "We factor the quadratic as $(x - a)(x - b) = 0$ and check each root. ",
    "Counting the cases separately and adding them, we obtain ",
    "Let $s$ denote the sum; then $2s = n(n+1)$, so ",
    "The probability is the ratio of favourable outcomes to all outcomes, which is ",
]


def _fraction(rng):
    numerator, denominator = rng.randint(1, 20), rng.randint(21, 40)
    right = [f"\\frac{{{numerator}}}{{{denominator}}}", f"{numerator}/{denominator}",
             f"\\dfrac{{{2 * numerator}}}{{{2 * denominator}}}"]
    return f"\\frac{{{numerator}}}{{{denominator}}}", right, [f"\\frac{{{numerator + 1}}}{{{denominator}}}"]


def _expression(rng):
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    gold = f"{a}x^2 + {b}x"
    return gold, [gold, f"x({a}x + {b})", f"{b}x + {a}x^2"], [f"{a}x^2 - {b}x", f"{a}x + {b}"]


def _set(rng):
    values = sorted(rng.sample(range(-9, 10), 3))
    gold = "\\{" + ", ".join(map(str, values)) + "\\}"
    shuffled = rng.sample(values, 3)
    wrong = "\\{" + ", ".join(map(str, values[:2])) + "\\}"
    return gold, ["\\{" + ", ".join(map(str, shuffled)) + "\\}"], [wrong]


def _interval(rng):
    low, high = rng.randint(-9, 0), rng.randint(1, 9)
    return f"({low}, {high}]", [f"({low},{high}]"], [f"[{low}, {high}]", f"({low}, {high})"]


def make_responses(num_responses: int, samples_per_problem: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    responses, golds = [], []
    while len(responses) < num_responses:
        gold, right, wrong = rng.choice(_ANSWER_KINDS)(rng)
        for _ in range(samples_per_problem):
            reasoning = "".join(rng.choice(_REASONING) for _ in range(rng.randint(3, 7)))
            answer = rng.choice(right) if rng.random() < 0.5 else rng.choice(wrong)
            boxed = f"Therefore the answer is $\\boxed{{{answer}}}$."
            ending = boxed if rng.random() > 0.05 else "I am not sure."
            responses.append(reasoning + ending)
            golds.append(gold)
    return responses[:num_responses], golds[:num_responses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num_responses", type=int, default=2000)
    parser.add_argument("--samples_per_problem", type=int, default=8)
    parser.add_argument("--timeout_s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=400,
                        help="untimed responses (another seed) through both paths first")
    args = parser.parse_args()

    responses, golds = make_responses(args.num_responses, args.samples_per_problem, args.seed)
    warm_responses, warm_golds = make_responses(args.warmup, args.samples_per_problem, args.seed + 1)
    mean_chars = sum(map(len, responses)) / len(responses)

    load_before = os.getloadavg()[0]
    for response, gold in zip(warm_responses, warm_golds):
        score(response, gold)
    cpu_start, start = time.process_time(), time.perf_counter()
    serial = [score(response, gold)[0] for response, gold in zip(responses, golds)]
    serial_s, serial_cpu = time.perf_counter() - start, time.process_time() - cpu_start

    with MathVerifier(num_workers=args.workers, timeout_s=args.timeout_s) as verifier:
        verifier.wait_ready()
        verifier.verify_batch(warm_responses, warm_golds)
        workers = [psutil.Process(pid) for pid in verifier.worker_pids]
        workers_cpu_start = sum(sum(worker.cpu_times()[:2]) for worker in workers)
        cpu_start, start = time.process_time(), time.perf_counter()
        results = verifier.verify_batch(responses, golds)
        stage_s, parent_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        # Timeouts would replace workers and lose their CPU count; the run's golds have none.
        workers_cpu = sum(sum(worker.cpu_times()[:2]) for worker in workers) - workers_cpu_start
    staged = [result.status for result in results]
    mismatches = sum(a != b for a, b in zip(serial, staged) if "timeout" not in (a, b))

    serial_rate, stage_rate = len(responses) / serial_s, len(responses) / stage_s
    speedup, target = stage_rate / serial_rate, 0.8 * args.workers
    print(f"{len(responses)} responses, mean {mean_chars:.0f} chars; statuses {count_statuses(results)}")
    print(f"{os.cpu_count()} cores, load average {load_before:.1f} before the run")
    print(f"{'mode':<24}{'wall s':>8}{'items/s':>9}{'CPU ms/item':>13}")
    serial_cpu_ms = 1e3 * serial_cpu / len(responses)
    print(f"{'serial, in-process':<24}{serial_s:>8.2f}{serial_rate:>9.1f}{serial_cpu_ms:>13.2f}")
    stage_cpu_ms = 1e3 * (workers_cpu + parent_cpu) / len(responses)
    print(f"{f'stage, {args.workers} workers':<24}{stage_s:>8.2f}{stage_rate:>9.1f}{stage_cpu_ms:>13.2f}")
    print(f"  of which the dispatching process: {1e3 * parent_cpu / len(responses):.2f} CPU ms/item")
    verdict = "meets" if speedup >= target else "misses"
    print(f"speed-up {speedup:.2f}x vs target {target:.2f}x (0.8 x workers): {verdict} it")
    print(f"status disagreements serial vs stage (timeouts aside): {mismatches}")


if __name__ == "__main__":
    main()
