#!/usr/bin/env bash
# Start the same training command on every worker; jax.distributed finds its peers.
#   tpu_setup/launch.sh --config=configs/grpo.py:qwen3_4b \
#       --config.model.checkpoint=/mnt/ckpt/Qwen3-4B-Base \
#       --config.data.train=/mnt/data/train.parquet --workdir=/mnt/runs/qwen3_4b
# The checkpoint, data and workdir must be on storage every worker sees (a gcsfuse
# mount or Filestore): Orbax writes one checkpoint from all hosts together. Output goes
# to $REPO_DIR/launch.log on each worker; worker 0 shows the progress. Re-running the
# same command resumes from the workdir's last checkpoint.
source "$(dirname "$0")/common.sh"
if [[ $# -eq 0 ]]; then
    echo "usage: tpu_setup/launch.sh --config=configs/<method>.py[:variant] [flags...]" >&2
    exit 2
fi
# A config the checkout does not have would start every worker only to fail there.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for arg in "$@"; do
    if [[ "$arg" == --config=* ]]; then
        file=${arg#--config=}
        file=${file%%:*}
        if [[ "$file" != /* ]]; then file="$ROOT/$file"; fi
        if [[ ! -f "$file" ]]; then
            echo "launch.sh: no config file $file" >&2
            exit 2
        fi
    fi
done
ARGS=$(printf '%q ' "$@")
on_all_workers "cd $REPO_DIR && . .venv/bin/activate \
    && nohup python -m rl_reason.main $ARGS > launch.log 2>&1 &"
echo "Started on every worker of $TPU_NAME; follow it with:"
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=0 --command='tail -f $REPO_DIR/launch.log'"
