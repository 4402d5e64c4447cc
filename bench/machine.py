"""The machine a benchmark ran on, recorded beside its results: CPU model and flags that matter
(AVX512-VNNI, AMX), cores, memory, GPU, Python and the versions of the libraries that set speed."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s", "pypdf", "pypdfium2", "numpy")


def describe() -> dict:
    cpu, flags = platform.processor(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total = next((line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal")), "")
        memory = round(int(total.split()[1]) / 2**20, 1) if total else None
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": memory, "gpu": gpu,
            "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"}),
            "platform": platform.platform(), "python": platform.python_version(), "libraries": versions}
