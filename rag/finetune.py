"""LoRA fine-tuning with peft on data from rag/finetune_data.py; writes a registered adapter.

Methods (one peft config, and sometimes an optimizer, each):
- `lora`: LoRA (Hu et al. 2021), scaling alpha / r;
- `rslora`: rank-stabilised LoRA, scaling alpha / sqrt(r), so higher ranks keep learning;
- `dora`: weight-decomposed LoRA (magnitude + direction);
- `lora-fa`: A frozen at its random init, only B trained (less activation memory; peft's LoRA-FA optimizer);
- `loraplus`: B learns `loraplus_ratio` times faster than A (peft's LoRA+ optimizer);
- `vera`: shared frozen random projections, only per-layer scaling vectors trained (far fewer parameters).
`init="loftq"` initialises LoRA from a 4-bit quantisation of the weights (peft computes it on CUDA
only). `embedding_lr` adds LoRA on the token embeddings with its own, lower, learning rate
(differential learning rates).

Training is the transformers Trainer: loss on the answer tokens only (chat data) or on all tokens
(cpt), held-out loss with early stopping, gradient checkpointing on CUDA, bf16 mixed precision where
the hardware computes it natively (CUDA; CPUs with AVX512-BF16 or AMX), fp32 elsewhere (`precision`).
It does not build data, serve, or evaluate beyond a held-out recall check.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.adapters import CARD_FILE, check_name, read_adapter
from rag.errors import ConfigError, RagError

METHODS = ("lora", "rslora", "dora", "lora-fa", "loraplus", "vera")
INITS = ("default", "gaussian", "loftq")
PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_LR = {"vera": 5e-3}  # VeRA trains only scaling vectors and needs a higher rate
BASE_LR = 5e-4


class FinetuneError(RagError):
    """A run that cannot start or finish; the message says why and what to do."""


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class FinetuneConfig:
    """One training run. The help texts and choices are the `rag finetune` flags (rag/cli_args.py)."""

    data: Path = field(metadata={"help": "folder written by rag finetune-data"})
    name: str = field(metadata={"help": "adapter name (rag adapters, rag ask --adapter NAME)"})
    base_model: str  # a Hugging Face folder (the embedded SmolLM2 by default, resolved by the caller)
    adapters_dir: Path
    method: str = _opt("lora", "peft method", choices=METHODS)
    rank: int = _opt(16, "LoRA rank")
    alpha: float | None = _opt(None, "LoRA alpha (default: 2 x rank)")
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lr: float | None = _opt(None, "learning rate (default 5e-4; vera 5e-3)")
    epochs: float = _opt(3.0, "passes over the training data")
    max_steps: int = _opt(-1, "stop after N optimizer steps (overrides --epochs)")
    batch_size: int = _opt(4, "examples per step")
    grad_accum: int = _opt(1, "gradient accumulation steps")
    max_length: int = _opt(512, "tokens per example")
    warmup_ratio: float = 0.05
    loraplus_ratio: float = _opt(16.0, "loraplus: lr of B / lr of A")
    embedding_lr: float | None = _opt(None, "also adapt the token embeddings, at this lower learning rate")
    init: str = _opt("default", "LoRA init; loftq needs a CUDA GPU", choices=INITS)
    precision: str = _opt("auto", "auto: bf16 mixed precision on CUDA and on CPUs with AVX512-BF16 or AMX, else fp32",
                          choices=PRECISIONS)
    eval_steps: int = _opt(10, "held-out loss every N steps")
    patience: int = _opt(3, "early stopping after this many held-out evaluations without improvement; 0 = off")
    check: int = _opt(10, "held-out questions answered before and after training, to see learning (0 = skip)")
    seed: int = _opt(0, "random seed")
    device: str = "auto"
    overwrite: bool = _opt(False, "replace an adapter of the same name")
    progress: bool = True

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
        if self.init == "loftq" and self.method in ("vera", "dora"):
            raise ConfigError(f"LoftQ initialisation applies to LoRA adapters, not {self.method}")
        for key in ("rank", "batch_size", "grad_accum", "max_length", "eval_steps"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)!r}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("give a positive number of epochs or max_steps")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr!r}")
        self.data = Path(self.data)
        self.adapters_dir = Path(self.adapters_dir)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.method, BASE_LR)

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.rank


@dataclass
class FinetuneResult:
    name: str
    path: Path
    card: dict = field(default_factory=dict)


def random_adapter(model_dir: str | Path, folder: Path, rank: int = 8, seed: int = 0) -> Path:
    """An untrained LoRA adapter with seeded random A and B on the q and v projections: it changes the
    output (peft's zero-initialised B would not), so it checks serving and adapter selection without
    training. Used by the tests' vLLM server and bench/serve.py."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder)
    return Path(folder)


def peft_config(config: FinetuneConfig):
    """The peft config for a method: a plain dict registry would hide that they differ only in flags."""
    from peft import LoftQConfig, LoraConfig, VeraConfig

    targets = list(config.target_modules) + (["embed_tokens"] if config.embedding_lr else [])
    if config.method == "vera":
        return VeraConfig(r=config.rank, target_modules=list(config.target_modules), vera_dropout=config.dropout,
                          save_projection=True, task_type="CAUSAL_LM")
    extra: dict[str, Any] = {}
    if config.init == "loftq":
        import torch

        if not torch.cuda.is_available():
            raise FinetuneError(
                "LoftQ initialisation needs a CUDA GPU: peft computes it on 'cuda' (hard-coded) and this machine "
                "has none; train with --init default here, or run on a GPU machine"
            )
        extra = {"init_lora_weights": "loftq", "loftq_config": LoftQConfig(loftq_bits=4, loftq_iter=1)}
    elif config.init == "gaussian":
        extra = {"init_lora_weights": "gaussian"}
    return LoraConfig(
        r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.dropout, target_modules=targets,
        use_rslora=config.method == "rslora", use_dora=config.method == "dora", task_type="CAUSAL_LM", **extra,
    )


def make_optimizer(model, config: FinetuneConfig):
    """None (the Trainer's AdamW) or the method's own optimizer; embeddings get their own rate."""
    import torch

    lr = config.learning_rate
    if config.method == "loraplus":
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=config.loraplus_ratio,
                                         loraplus_lr_embedding=config.embedding_lr or 1e-6)
    if config.method == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(model, r=config.rank, lora_alpha=config.lora_alpha, lr=lr)
    if config.embedding_lr:
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in trainable if "embed_tokens" not in n], "lr": lr},
                  {"params": [p for n, p in trainable if "embed_tokens" in n], "lr": config.embedding_lr}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    return None


def tokenize_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """input_ids/labels per example: chat rows learn the assistant turn only, text rows every token.
    Over-long chat prompts lose their start (the answer is kept); returns (examples, truncated count)."""
    from rag.generator import ControlTokens

    # Document text never becomes a control token, in training as in serving (rag/generator.py).
    guard = ControlTokens.from_tokenizer(tokenizer)
    examples, truncated = [], 0
    eos = tokenizer.eos_token or ""
    for row in rows:
        if "messages" in row:
            messages = guard.neutralise_messages(row["messages"])
            prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            # The answer ends as the template ends a turn (<|im_end|> for SmolLM2), which is what generation
            # stops at, whatever the tokenizer names its eos token; the eos is the fallback.
            answer = full[len(prompt):] if full.startswith(prompt) else messages[-1]["content"] + eos
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            answer_ids = answer_ids[:max_length]
            room = max_length - len(answer_ids)
            if len(prompt_ids) > room:
                truncated += 1
                prompt_ids = prompt_ids[len(prompt_ids) - room:] if room > 0 else []
            ids = prompt_ids + answer_ids
            labels = [-100] * len(prompt_ids) + answer_ids
        else:
            ids = tokenizer(guard.neutralise(row["text"]) + eos, add_special_tokens=False)["input_ids"]
            if len(ids) > max_length:
                truncated += 1
                ids = ids[:max_length]
            labels = list(ids)
        examples.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
    return examples, truncated


def span_recall(model, tokenizer, rows: list[dict], device: str, max_new_tokens: int = 48) -> float | None:
    """Share of chat rows whose generated answer holds the row's key fact (`span`), greedy."""
    import torch

    rows = [row for row in rows if "messages" in row and row.get("span")]
    if not rows:
        return None
    from rag.generator import ControlTokens

    guard = ControlTokens.from_tokenizer(tokenizer)
    hits = 0
    model.eval()
    for row in rows:
        prompt = guard.neutralise_messages(row["messages"][:-1])
        inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += " ".join(row["span"].lower().split()) in " ".join(text.lower().split())
    return hits / len(rows)


def train(config: FinetuneConfig) -> FinetuneResult:
    """Train one adapter and register it as `<adapters_dir>/<name>`; FinetuneError if it cannot."""
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    from rag.embedding import cpu_has_bf16, pick_device
    from rag.finetune_data import read_dataset

    target = config.adapters_dir / config.name
    if target.exists() and not config.overwrite:
        raise FinetuneError(f"adapter {config.name!r} already exists at {target}; choose another --name or --overwrite")
    train_rows, heldout_rows, meta = read_dataset(config.data)
    device = pick_device(config.device)
    cuda = device == "cuda"
    native_bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
    bf16 = config.precision == "bf16" or (config.precision == "auto" and native_bf16)
    torch.manual_seed(config.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32)
    except OSError as exc:
        raise FinetuneError(f"cannot load base model {config.base_model}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    check_rows = [row for row in heldout_rows if "messages" in row][: config.check]
    recall_before = span_recall(model, tokenizer, check_rows, device) if check_rows else None
    model = get_peft_model(model, peft_config(config))
    trainable, total = model.get_nb_trainable_parameters()
    train_set, truncated = tokenize_rows(train_rows, tokenizer, config.max_length)
    eval_set, _ = tokenize_rows(heldout_rows, tokenizer, config.max_length)

    work = Path(tempfile.mkdtemp(prefix=f"ft-{config.name}-"))
    evaluate = bool(eval_set)
    early = evaluate and config.patience > 0
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # < 1: a share of the steps
        lr_scheduler_type="linear", logging_steps=1,
        eval_strategy="steps" if evaluate else "no", eval_steps=config.eval_steps,
        save_strategy="steps" if early else "no", save_steps=config.eval_steps, save_total_limit=1,
        load_best_model_at_end=early, metric_for_best_model="eval_loss", greater_is_better=False,
        bf16=bf16, gradient_checkpointing=cuda, use_cpu=not cuda,
        seed=config.seed, report_to=[], disable_tqdm=not config.progress, remove_unused_columns=False,
        dataloader_num_workers=0, save_only_model=True,
    )
    if cuda:
        model.enable_input_require_grads()  # gradient checkpointing with frozen embeddings
    optimizer = make_optimizer(model, config)
    trainer = Trainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        optimizers=(optimizer, None), callbacks=[EarlyStoppingCallback(config.patience)] if early else [],
    )
    if not config.progress:  # quiet: no per-step log dicts printed to stdout (`rag finetune --json` prints JSON)
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - start
    final_eval = trainer.evaluate()["eval_loss"] if evaluate else None
    recall_after = span_recall(model, tokenizer, check_rows, device) if check_rows else None

    tokens = sum(len(example["input_ids"]) for example in train_set)
    steps = trainer.state.global_step
    history = trainer.state.log_history
    card = {
        "name": config.name, "method": config.method, "rank": config.rank, "alpha": config.lora_alpha,
        "init": config.init, "target_modules": list(config.target_modules),
        "embedding_lr": config.embedding_lr, "learning_rate": config.learning_rate,
        "loraplus_ratio": config.loraplus_ratio if config.method == "loraplus" else None,
        "base_model": config.base_model, "data": str(config.data), "data_mode": meta.get("mode"),
        "data_collection": meta.get("collection"), "data_sha256": _sha256(config.data / "train.jsonl"),
        "train_examples": len(train_set), "heldout_examples": len(eval_set), "truncated_examples": truncated,
        "steps": steps, "epochs": round(trainer.state.epoch or 0.0, 3), "batch_size": config.batch_size,
        "grad_accum": config.grad_accum, "max_length": config.max_length, "seed": config.seed,
        "device": device, "precision": "bf16" if args.bf16 else "fp32",
        "trainable_params": trainable, "total_params": total,
        "train_seconds": round(train_seconds, 2), "seconds_per_step": round(train_seconds / max(steps, 1), 3),
        "train_tokens_per_s": round(tokens * (trainer.state.epoch or 0) / train_seconds, 1) if train_seconds else None,
        "final_train_loss": _last(history, "loss"), "train_loss_mean": round(output.training_loss, 4),
        "final_eval_loss": None if final_eval is None else round(final_eval, 4),
        "stopped_early": early and steps < _planned_steps(config, len(train_set)),
        "heldout_recall_before": recall_before, "heldout_recall_after": recall_after,
        "heldout_recall_checked": len(check_rows),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    staging = config.adapters_dir / f".{config.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    card["vllm_servable"] = read_adapter(staging).vllm_problem is None  # decided in one place: rag/adapters.py
    (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    plot_losses(history, staging / "loss.png", title=f"{config.name}: {config.method} r={config.rank}")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)  # the registry never lists a half-written adapter
    shutil.rmtree(work, ignore_errors=True)
    return FinetuneResult(config.name, target, card)


def _planned_steps(config: FinetuneConfig, examples: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(examples / config.batch_size) / config.grad_accum)
    return math.ceil(per_epoch * config.epochs)


def _last(history: list[dict], key: str) -> float | None:
    values = [entry[key] for entry in history if key in entry]
    return round(values[-1], 4) if values else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plot_losses(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in (("loss", "train"), ("eval_loss", "held-out")):
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if points:
            ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


