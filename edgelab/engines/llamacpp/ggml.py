"""The few ggml C functions edgelab calls directly, loaded from llama-cpp-python's libs.

llama-cpp-python exposes llama.h but not the ggml RPC backend, so worker and root
reach it through ctypes. Libraries are opened by their SONAME (``libggml.so.0``):
libllama links against that name, and opening the ``libggml.so`` symlink instead
would give this process a second, separate backend registry in which registered
RPC devices are invisible to llama.cpp (the model then silently stays on the CPU).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edgelab.engines.base import EngineError

GGML_BACKEND_DEVICE_TYPE_CPU = 0
RPC_LIB = "libggml-rpc.so.0"
GGML_LIB = "libggml.so.0"


def lib_dir() -> Path:
    """Directory holding llama-cpp-python's shared libraries (``LLAMA_CPP_LIB_PATH`` wins)."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return Path(override)
    # find_spec does not import llama_cpp, so a worker never loads libllama at all.
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise EngineError(
            "llama-cpp-python is not installed; install it with "
            'CMAKE_ARGS="-DGGML_RPC=ON" pip install llama-cpp-python (see DEVELOPERS.md)'
        )
    return Path(spec.origin).parent / "lib"


@dataclass(frozen=True)
class Ggml:
    """Handles on libggml and libggml-rpc with their C signatures declared."""

    ggml: ctypes.CDLL
    rpc: ctypes.CDLL

    def cpu_device(self) -> int:
        dev = self.ggml.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
        if not dev:
            raise EngineError("ggml has no CPU device")
        return int(dev)

    def device_names(self) -> list[str]:
        """Names of every device in the registry, in llama.cpp's order."""
        count = self.ggml.ggml_backend_dev_count()
        names = []
        for i in range(count):
            name = self.ggml.ggml_backend_dev_name(self.ggml.ggml_backend_dev_get(i))
            names.append(name.decode() if name else f"device{i}")
        return names

    def add_rpc_server(self, endpoint: str) -> None:
        """Register the RPC server at ``host:port`` as device(s) for the next model load."""
        reg = self.rpc.ggml_backend_rpc_add_server(endpoint.encode())
        if not reg:
            raise EngineError(f"cannot add RPC server {endpoint}")
        self.ggml.ggml_backend_register(reg)

    def start_rpc_server(self, endpoint: str, threads: int) -> None:
        """Serve this process's CPU device at ``endpoint``; blocks for the process's life."""
        devices = (ctypes.c_void_p * 1)(self.cpu_device())
        self.rpc.ggml_backend_rpc_start_server(endpoint.encode(), None, threads, 1, devices)


@cache
def load_ggml() -> Ggml:
    """Open the libraries once per process; raise ``EngineError`` saying what is missing.

    ggml answers fatal errors (an unreachable or vanished RPC server) with abort()
    after attaching gdb for a backtrace; that buries the one useful line under a
    screen of gdb output at the end of the node's log, where the cluster looks for
    the reason a node died. Set ``GGML_NO_BACKTRACE`` yourself to choose otherwise.
    """
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    directory = lib_dir()
    try:
        ggml = ctypes.CDLL(str(directory / GGML_LIB))
    except OSError as exc:
        raise EngineError(f"cannot load {GGML_LIB} from {directory}: {exc}") from exc
    try:
        rpc = ctypes.CDLL(str(directory / RPC_LIB))
    except OSError as exc:
        raise EngineError(
            f"llama-cpp-python in {directory.parent} was built without the RPC backend "
            f'({exc}); reinstall it with CMAKE_ARGS="-DGGML_RPC=ON"'
        ) from exc

    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_count.argtypes = []
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_name.restype = ctypes.c_char_p
    ggml.ggml_backend_register.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_register.restype = None

    rpc.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    rpc.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
    rpc.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p,  # endpoint "host:port"
        ctypes.c_char_p,  # cache_dir, NULL: no tensor cache on disk
        ctypes.c_size_t,  # n_threads
        ctypes.c_size_t,  # n_devices
        ctypes.POINTER(ctypes.c_void_p),  # ggml_backend_dev_t devices[]
    ]
    rpc.ggml_backend_rpc_start_server.restype = None
    return Ggml(ggml, rpc)
