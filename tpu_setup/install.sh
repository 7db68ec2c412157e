#!/usr/bin/env bash
# Copy this checkout to every worker and install it with the TPU build of jax.
#   tpu_setup/install.sh
# The same jax version as pyproject.toml, with libtpu; everything else from the project's
# own pins (pip install -e .). Re-running it updates the code and keeps the environment.
source "$(dirname "$0")/common.sh"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
JAX_VERSION=$(sed -n 's/^ *"jax==\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -1)
if [[ -z "$JAX_VERSION" ]]; then
    echo "install.sh: no jax==X pin found in $ROOT/pyproject.toml" >&2
    exit 1
fi
ARCHIVE=$(mktemp -t rl_reason.XXXXXX.tar.gz)
trap 'rm -f "$ARCHIVE"' EXIT
run tar -czf "$ARCHIVE" -C "$ROOT" --exclude=.git --exclude=.venv --exclude=workdirs .
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME":/tmp/rl_reason.tar.gz \
    --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all
on_all_workers "set -e; mkdir -p $REPO_DIR && tar -xzf /tmp/rl_reason.tar.gz -C $REPO_DIR \
    && cd $REPO_DIR && python3 -m venv .venv && . .venv/bin/activate \
    && pip install -q --upgrade pip \
    && pip install -q 'jax[tpu]==$JAX_VERSION' \
        -f https://storage.googleapis.com/jax-releases/libtpu_releases.html \
    && pip install -q -e . \
    && python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
