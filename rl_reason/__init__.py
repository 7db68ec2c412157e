"""rl_reason: reinforcement learning with verifiable rewards for reasoning LMs, in JAX.

Shape letters, one vocabulary for the whole package (arrays are named with them as
suffixes, e.g. `logits_BTV`; a module's docstring names any letter it adds):

    B  batch rows                      D  model dim
    T  tokens in a row                 H  query heads
    P  (padded) context length         K  key/value heads
    S  key / cache slots               Q  query heads per kv head (GQA group)
    W  decode capacity (new tokens)    E  head dim
    V  vocabulary                      F  MLP dim
    L  layers                          C  chunk length, U  chunks
    G  group size (responses per prompt)
    M  members of a flat batch of groups, J  groups
    N  items of a list argument (prompts, problems)
"""
