"""Settings shared by every method. Method configs start from `get_base_config()`.

Every key a run can set is defined here (or in a method's `method` block), so a typo
on the command line (`--config.rollout.group_sise=4`) is an error, not a no-op.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "run"
    c.method_name = "grpo"
    c.seed = 0
    # Printed at the start of a run (e.g. that a method config still runs a stand-in).
    c.note = ""

    # The embedded world (rl_reason/data/worlds.py): the synthetic task trained and
    # evaluated on when data.train is empty, and the base policy an empty
    # model.checkpoint starts from. 'traps': wrong answers say why they are wrong and
    # the base policy can use them (every method's premise measured:
    # rl_reason/premises.py); 'arith': the earlier world, whose failures carry no
    # information (the no-information reference).
    c.world = ml_collections.ConfigDict(dict(
        name="traps",
        # The premise dial of the base policy: the share of its warm-start failures it
        # learned to use (0 = none). -1 = the world's default.
        skill=-1.0,
    ))

    # Policy. An empty checkpoint means the embedded world's base policy (shipped with
    # the package, or built and cached on first use by rl_reason.pretrain).
    c.model = ml_collections.ConfigDict(dict(
        checkpoint="",
        dtype="float32",          # activations / matmuls
        param_dtype="float32",    # stored parameters and optimizer state
        remat=False,              # rematerialise layers in the update (long sequences)
        logprob_chunk=0,          # >0: log-softmax over this many positions at a time
    ))

    # Data. Empty train/eval mean the embedded synthetic task and its held-out split.
    c.data = ml_collections.ConfigDict(dict(
        train="",                 # .jsonl / .parquet path or 'tfds:name/split'
        eval=(),                  # held-out files (tuple of paths)
        tfds_data_dir="",         # where 'tfds:' datasets are prepared ('' = TFDS default)
        problem_key="",           # '' = auto-detect (see rl_reason/data/sources.py)
        answer_key="",
        shuffle=True,
        num_epochs=0,             # 0 = cycle forever
        embedded_train_size=4000,
        embedded_eval_size=200,
        # Difficulty levels of the embedded task used for training and held-out
        # evaluation (the world's LEVELS, 1 = easiest: rl_reason/data/traps.py,
        # rl_reason/data/synthetic.py).
        embedded_levels=(1, 2, 3, 4, 5, 6, 7, 8),
        # Levels of the embedded held-out split, when they differ from the training
        # levels (e.g. train on the easy levels, evaluate on them and the next ones);
        # empty: data.embedded_levels.
        embedded_eval_levels=(),
        # When retirement (or num_epochs) leaves fewer prompts than a step asks for:
        # 'stop' ends the run cleanly (final evaluation, checkpoint, export); 'shrink'
        # serves the prompts that are left, and stops when none are.
        when_exhausted="stop",
    ))

    c.verifier = ml_collections.ConfigDict(dict(
        name="exact_int",         # 'math' (math-verify) or 'exact_int'
        timeout_s=5.0,
        num_workers=2,
    ))

    c.rollout = ml_collections.ConfigDict(dict(
        prompts_per_step=16,      # B
        group_size=8,             # G
        max_prompt_len=256,       # longer training prompts are dropped at load (warned)
        max_new_tokens=96,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        # The sampler's slots: rows decoded at once (0 = all of a round's rows). A round
        # is one sampler call whatever its size: when a row stops, a waiting row is
        # prefilled into its slot (continuous batching, rl_reason/sampling). Until
        # issue 28 this was the rows of each separate sampler call. Bounds the KV cache:
        # layers * slots * (prompt + new tokens) * kv_heads * head_dim * 2 values. Also
        # the rows per chunk when the trainer scores sequences (ctx.score).
        max_sample_batch=0,
        # The KV cache's dtype in rollouts and evaluation ('' = model.dtype): 'bfloat16'
        # halves its memory and reads at float32 compute, rounding keys and values.
        cache_dtype="",
        dynamic_sampling=False,   # DAPO: drop all-equal groups and refill
        max_refill_rounds=3,
    ))

    # Reward shaping before the advantages (docs/methods.md, "GRPO").
    c.reward = ml_collections.ConfigDict(dict(
        overlong_buffer=0,        # DAPO overlong shaping: tokens before the limit
        overlong_penalty=1.0,
        mask_truncated=False,     # DAPO: no loss on truncated responses
    ))

    # The group advantage estimator (docs/methods.md, "GRPO"; rl_reason/rl/advantages.py).
    c.advantage = ml_collections.ConfigDict(dict(
        estimator="grpo",         # 'grpo' or 'rloo'
        norm_by_std=True,         # False = Dr.GRPO
    ))

    # The policy loss (docs/methods.md, "GRPO" and "Off-policy tokens"); methods may
    # override defaults. Only keys that reach the loss (rl_reason/rl/losses.py
    # LossConfig) live here.
    c.loss = ml_collections.ConfigDict(dict(
        clip_low=0.2,
        clip_high=0.2,            # 0.28 = DAPO clip-higher
        aggregation="token-mean", # 'token-mean' | 'seq-mean-token-mean' | 'constant'
        kl_coef=0.0,
        kl_estimator="k3",
        entropy_coef=0.0,
        shaping_gamma=0.1,        # off-policy f(w) = w / (w + gamma)
        # Off-policy tokens: 'shaped' (f(w) above), 'ratio' (raw importance ratio w),
        # 'none' (-A * log p, no importance correction).
        off_policy_weight="shaped",
        clip_on_policy=True,
    ))

    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=1e-6,
        warmup_steps=10,
        weight_decay=0.1,
        b1=0.9,
        b2=0.999,
        grad_clip=1.0,
        skip_grad_norm_above=0.0, # >0: skip updates whose grad norm exceeds this
        ppo_epochs=1,             # passes over each rollout batch
        num_minibatches=1,        # optimizer steps per pass
        # Gradient accumulation: each minibatch's rows in this many micro-batches, one
        # micro-batch's activations in memory at a time; the same update as one batch.
        micro_batches=1,
    ))

    c.train = ml_collections.ConfigDict(dict(
        num_steps=100,
        # >0: also stop once this many tokens were generated in all (every sampler call
        # counts: rollouts, hints, retries, mining), so arms compare at equal budget.
        max_generated_tokens=0,
        eval_every=0,             # 0 = only before the first and after the last step
        checkpoint_every=10,
        keep_checkpoints=3,
        # An unreadable latest checkpoint is renamed aside (kept) and the previous one
        # restored, with a warning; False stops with the error instead.
        checkpoint_fallback=True,
        export_hf=True,           # write workdir/hf (transformers format) at the end
        seq_bucket=64,            # training rows padded to a multiple of this length
        # Run each distinct prompt of the update's batch once (a GRPO group's G rows
        # share its keys and values; rl/batch.py collate_shared): the same loss and
        # gradient with fewer tokens. False: every row runs whole (seq_bucket above).
        share_prefixes=True,
        shared_seq_bucket=16,     # prefixes and suffixes padded to a multiple of this
    ))

    c.eval = ml_collections.ConfigDict(dict(
        enabled=True,             # held-out evaluation before, during and after training
        num_samples=4,            # samples per problem for avg@k / pass@k
        temperature=0.6,
        top_p=1.0,
        ks=(1, 4),
        max_new_tokens=0,         # 0 = rollout.max_new_tokens
        max_problems=0,           # 0 = all
        # k attempts with feedback (rl_reason/evaluation/attempts.py): attempts@1..K; the
        # attempts of an episode share one budget of max_new_tokens.
        attempts=0,               # K; 0 = off
        attempt_feedback="multi_attempt",  # 'multi_attempt' or 'verifier' (R3L)
        attempt_temperature=0.0,  # 0 = greedy; R3L evaluates at 0.4
        # Continuation from a prefix of the policy's own wrong response
        # (rl_reason/evaluation/misleading_prefix.py), mined at the first evaluation
        # into WORKDIR/eval/misleading_prefixes.jsonl and reused by every later one.
        misleading_prefix=False,
        prefix_fraction=0.5,      # the prefix keeps this share of the wrong response's tokens
        prefix_samples=8,         # samples per problem to find a wrong response in
        # Runs that start from the same checkpoint with the same seed and evaluation
        # settings share one step-0 evaluation (cached under RL_REASON_CACHE).
        share_initial=True,
    ))

    # Where metrics go besides WORKDIR/metrics.jsonl and its TensorBoard events.
    c.logging = ml_collections.ConfigDict(dict(
        # Also to Weights & Biases (rl_reason/wandb_sink.py; pip install -e ".[wandb]"):
        # the same metric names and the run config, from process 0; a resumed run
        # continues the same W&B run. WANDB_MODE=offline keeps it on disk.
        wandb=False,
        wandb_project="rl_reason",
        wandb_entity="",          # '' = the account's default entity
        wandb_run_name="",        # '' = the workdir's folder name
    ))

    # Mesh axes; -1 fills with the remaining devices.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    # Method-specific settings live here; each method config fills it.
    c.method = ml_collections.ConfigDict()
    return c


def embedded_cpu_settings(c: ml_collections.ConfigDict) -> None:
    """The laptop-sized run on the embedded task (a few minutes on 2 CPU cores)."""
    c.model.checkpoint = ""
    c.verifier.name = "exact_int"
    c.rollout.update(prompts_per_step=16, group_size=8, max_prompt_len=128,
                     max_new_tokens=64)
    # The levels where the base policy is sometimes right (README, "The embedded task"): many groups are
    # mixed, so many samples carry a learning signal. Training and held-out records are
    # distinct problems, half of each level; level 2 has about 540 distinct held-out
    # problems in all, so 512 (256 a level) is near the most this split can hold.
    c.data.update(embedded_levels=(2, 3), embedded_train_size=4000, embedded_eval_size=512)
    c.optim.update(learning_rate=1e-4, warmup_steps=5, weight_decay=0.0)
    # Evaluations before and after training only: each one samples 9 responses for each
    # of the 512 problems, and the change between them is what the run reports.
    c.train.update(num_steps=40, eval_every=0, checkpoint_every=10)
    # 8 samples a problem: pass@4 is the unbiased estimate from 8, not "any of 4".
    c.eval.update(num_samples=8, ks=(1, 4, 8))
