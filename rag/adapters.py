"""Adapter registry: LoRA adapters trained on a collection, kept as peft folders under one directory.

Each adapter is `<adapters_dir>/<name>/` holding what peft's `save_pretrained` writes
(adapter_config.json, adapter_model.safetensors) plus `card.json` (how it was trained) and
`loss.png`. That folder loads unchanged in peft (the local generator) and in vLLM
(`--lora-modules name=path`). Adapters shipped inside the package (rag/data/adapters: the `reader`
adapter for the embedded SmolLM2) are found by name too, after the registered ones, and cannot be
removed. It does not train adapters (rag/finetune.py does) or serve them.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import RagError
from rag.models import is_embedded

SHIPPED_DIR = Path(__file__).resolve().parent / "data" / "adapters"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CARD_FILE = "card.json"


class AdapterError(RagError):
    """An adapter name or folder that cannot be used; the message names it and says why."""


@dataclass
class AdapterInfo:
    name: str
    path: Path
    base_model: str
    peft_type: str
    rank: int
    card: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # adapter_config.json
    shipped: bool = False  # inside the package (rag/data/adapters), not in the registry

    @property
    def vllm_problem(self) -> str | None:
        """Why vLLM cannot serve this adapter (it serves plain LoRA weights only), or None."""
        if self.peft_type and self.peft_type != "LORA":
            return f"vLLM serves LoRA adapters only, not {self.peft_type}"
        if self.config.get("use_dora"):
            return "vLLM does not support DoRA"
        init = self.config.get("init_lora_weights")
        if isinstance(init, str) and init.lower() not in ("gaussian", "eva", "orthogonal", "mica", "lora_ga"):
            return f"vLLM does not support init_lora_weights={init!r} (it changes the base weights)"
        return None

    def fits(self, model: str) -> bool:
        """Whether it can run on the `model` setting: a shipped adapter was trained for the embedded
        SmolLM2 only; a registered one is the user's to pair."""
        return not self.shipped or is_embedded(model)

    def as_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "base_model": self.base_model,
                "peft_type": self.peft_type, "rank": self.rank, "vllm_servable": self.vllm_problem is None,
                "shipped": self.shipped, "card": self.card}


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise AdapterError(
            f"adapter name {name!r} is invalid: use up to 64 letters, digits, '.', '-' or '_', starting with a "
            "letter or digit"
        )
    return name


def read_adapter(folder: Path, name: str | None = None, shipped: bool = False) -> AdapterInfo:
    """Describe one peft adapter folder; AdapterError when it is not one."""
    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{folder}: not a peft adapter folder (no adapter_config.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{config_path}: cannot read: {exc}") from None
    if not any((folder / weights).is_file() for weights in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterError(f"{folder}: adapter weights are missing (no adapter_model.safetensors)")
    card: dict = {}
    if (folder / CARD_FILE).is_file():
        try:
            card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AdapterError(f"{folder / CARD_FILE}: cannot read: {exc}") from None
    return AdapterInfo(
        name=name or folder.name,
        path=folder.resolve(),
        base_model=str(config.get("base_model_name_or_path") or ""),
        peft_type=str(config.get("peft_type") or ""),
        rank=int(config.get("r") or 0),
        card=card,
        config=config,
        shipped=shipped,
    )


def _scan(root: Path, shipped: bool = False) -> list[AdapterInfo]:
    if not root.is_dir():
        return []
    infos = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and NAME_RE.match(folder.name):
            try:
                infos.append(read_adapter(folder, shipped=shipped))
            except AdapterError:
                continue
    return infos


def list_adapters(adapters_dir: Path, shipped: bool = False) -> list[AdapterInfo]:
    """Every valid adapter under the directory, by name; folders that are not adapters are skipped
    (a training run in progress writes into a hidden temporary folder). `shipped` adds the package's
    own adapters whose names no registered one takes."""
    infos = _scan(Path(adapters_dir))
    if shipped:
        taken = {info.name for info in infos}
        infos += [info for info in _scan(SHIPPED_DIR, shipped=True) if info.name not in taken]
    return infos


def resolve_adapter(name_or_path: str, adapters_dir: Path) -> AdapterInfo:
    """A registered adapter by name, then a shipped one, or any peft adapter folder by path."""
    candidate = Path(name_or_path).expanduser()
    for root, shipped in ((Path(adapters_dir), False), (SHIPPED_DIR, True)):
        if NAME_RE.match(name_or_path) and (root / name_or_path).is_dir():
            return read_adapter(root / name_or_path, shipped=shipped)
    if candidate.is_dir():
        return read_adapter(candidate)
    known = ", ".join(info.name for info in list_adapters(adapters_dir, shipped=True)) or "none"
    raise AdapterError(f"no adapter named {name_or_path!r} in {adapters_dir} (registered: {known})")


def remove_adapter(name: str, adapters_dir: Path) -> Path:
    folder = Path(adapters_dir) / check_name(name)
    if not folder.is_dir() and (SHIPPED_DIR / name).is_dir():
        raise AdapterError(f"adapter {name!r} ships with the product ({SHIPPED_DIR / name}); it cannot be removed")
    if not folder.is_dir():
        known = ", ".join(info.name for info in list_adapters(adapters_dir)) or "none"
        raise AdapterError(f"no adapter named {name!r} in {adapters_dir} (registered: {known})")
    shutil.rmtree(folder)
    return folder
