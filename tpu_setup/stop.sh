#!/usr/bin/env bash
# Stop the training processes on every worker (a later launch.sh resumes the run).
source "$(dirname "$0")/common.sh"
on_all_workers "pkill -f 'python -m rl_reason.main' || true"
