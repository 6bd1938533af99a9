#!/usr/bin/env bash
# Install llama-cpp-python built with the ggml RPC backend into a virtualenv.
# Idempotent: does nothing when an RPC-enabled build is already installed. pip
# caches the wheel it builds, so a second virtualenv on the same machine takes seconds.
set -euo pipefail
PIP=${1:-pip}
PY=${2:-python3}
has_rpc() {
  "$PY" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llama_cpp")
if spec is None or spec.origin is None:
    sys.exit(1)
lib = pathlib.Path(spec.origin).parent / "lib"
sys.exit(0 if any(lib.glob("libggml-rpc.so*")) else 1)
PY
}
if has_rpc; then
  exit 0
fi
echo "building llama-cpp-python with GGML_RPC=ON (first time: several minutes)..."
CMAKE_ARGS="-DGGML_RPC=ON" "$PIP" install "llama-cpp-python>=0.3.8"
if ! has_rpc; then
  # A cached wheel without RPC was picked up: rebuild from source without the cache.
  CMAKE_ARGS="-DGGML_RPC=ON" "$PIP" install --force-reinstall --no-deps --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python>=0.3.8"
fi
has_rpc || { echo "llama-cpp-python has no libggml-rpc after the build" >&2; exit 1; }
