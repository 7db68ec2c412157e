#!/usr/bin/env bash
# Create a TPU VM pod slice.   ACCELERATOR=v6e-64 VERSION=v2-alpha-tpuv6e tpu_setup/create_pod.sh
# Spot capacity: SPOT=1. See common.sh for every setting.
source "$(dirname "$0")/common.sh"
EXTRA=()
if [[ "${SPOT:-0}" == 1 ]]; then EXTRA+=(--spot); fi
run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
    --accelerator-type="$ACCELERATOR" --version="$VERSION" "${EXTRA[@]}"
