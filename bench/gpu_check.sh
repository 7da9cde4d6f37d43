#!/usr/bin/env bash
# The GPU check of the training path (bench/gpu_check.py): a ~1B Llama-style model built from
# config, 2 PPO steps with each HF rollout engine and one reward-model epoch; prints rollout
# tokens/s, peak GPU memory and MFU. Runs in well under 8 minutes on one H100/H200.
#
# It needs torch, transformers, accelerate and peft, which a GPU machine usually has. The RM epoch
# also needs trl and datasets (and datasets' own dependencies): where the machine cannot fetch
# packages, put their wheels in bench/.wheels (ignored by git) on a machine that can,
#   pip download -d bench/.wheels --only-binary=:all: --python-version 3.12 trl datasets
# and carry that folder; they are installed from there with --no-index. Without them the PPO part
# runs and the RM epoch is skipped with a message.
#
#   bench/gpu_check.sh [--size 1b|100m|tiny] [--device cuda|cpu] [--batch 64] [--response-length 128]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -d bench/.wheels ] && ! "$PYTHON" -c "import trl, datasets" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --find-links bench/.wheels trl datasets \
        || echo "gpu_check: installing trl/datasets from bench/.wheels failed; the RM epoch will be skipped"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" bench/gpu_check.py "$@"
