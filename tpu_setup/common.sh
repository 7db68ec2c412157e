# Settings shared by the tpu_setup scripts; override any of them in the environment.
#   TPU_NAME      name of the TPU VM (pod slice)          default rl-reason
#   ZONE          Cloud zone                              default us-central2-b
#   PROJECT       Cloud project                           default: gcloud's current project
#   ACCELERATOR   slice type (v5litepod-64, v6e-64, v4-32) default v5litepod-64
#   VERSION       TPU VM software version                 default v2-alpha-tpuv5-lite
#   REPO_DIR      where the code lives on every worker    default ~/rl_reason
#   DRY_RUN=1     print the commands instead of running them
set -euo pipefail

TPU_NAME=${TPU_NAME:-rl-reason}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v5litepod-64}
VERSION=${VERSION:-v2-alpha-tpuv5-lite}
REPO_DIR=${REPO_DIR:-'~/rl_reason'}
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project="$PROJECT"); fi

run() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "$@"; echo
    else
        "$@"
    fi
}

# Runs a shell command on every worker of the slice at once.
on_all_workers() {
    run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
        --worker=all --command="$1"
}
