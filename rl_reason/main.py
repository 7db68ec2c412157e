"""Train with RL from verifiable rewards.

    python -m rl_reason.main --config=configs/grpo.py [--config.key=value ...] [--workdir=DIR]

With no other argument this runs the embedded default on CPU (a small base policy,
built and cached on first use, trained on the embedded arithmetic task). Re-running the
same command with the same workdir resumes where the run stopped.

A mistake in the config (its file, variant, an override key or value), a data file, the
checkpoint folder or the workdir ends the run with one line `error: <message>` and exit
status 2 (rl_reason/errors.py, rl_reason/config_flag.py).
"""

import os
import sys

# Config files import `configs.base`; make the repository root importable wherever the
# command is run from.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rl_reason import config_flag  # noqa: E402
from rl_reason.errors import exit_on_user_error  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file "
                                          "(configs/<method>.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, "
                               "exported model). Default: workdirs/<config name>.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 for a "
                                   "multi-process run outside TPU pods / SLURM.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Library INFO logs (Orbax, XLA backends) would bury the progress bar; --verbosity=0
    # brings them back.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from rl_reason import sharding, train  # after flag parsing: importing JAX is slow

    if _COORDINATOR.value and os.environ.get("JAX_PLATFORMS", "") == "cpu":
        import jax
        # CPU processes reach each other through gloo (tests, laptops).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
    train.run(config, workdir)


if __name__ == "__main__":
    app.run(exit_on_user_error(main),
            flags_parser=exit_on_user_error(config_flag.app_flags_parser))
