"""LoRA training with peft: every method on a tiny random Llama, the registry, the CLI, and one real
run where SmolLM2 learns a made-up fact."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import FACT_HELDOUT
from rag.adapters import AdapterError, list_adapters, read_adapter, remove_adapter, resolve_adapter
from rag.embedding import cpu_has_bf16
from rag.finetune import METHODS, FinetuneConfig, FinetuneError, make_optimizer, peft_config, train
from rag.finetune_data import build_dataset
from rag.generator import LocalGenerator
from rag.prompts import base_messages


@pytest.fixture(scope="module")
def data_dir(sample_collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft-data")
    build_dataset(sample_collection, out, mode="qa", paraphrases=2, heldout_fraction=0.2)
    return out


def tiny_config(tiny_model_dir, data_dir, adapters_dir, method, **changes):
    values = dict(data=data_dir, name=f"tiny-{method}", base_model=str(tiny_model_dir), adapters_dir=adapters_dir,
                  method=method, rank=4, max_steps=2, batch_size=2, lr=5e-2, eval_steps=1, patience=0, check=1,
                  progress=False)
    return FinetuneConfig(**{**values, **changes})


def logits(model_dir, adapter=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.inference_mode():
        return model(torch.tensor([[1, 2, 3, 4, 5, 6]])).logits


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_reloads_and_changes_the_output(method, tiny_model_dir, data_dir, tmp_path):
    result = train(tiny_config(tiny_model_dir, data_dir, tmp_path, method))
    card = result.card
    assert card["steps"] == 2 and card["method"] == method
    assert card["final_train_loss"] > 0 and card["final_eval_loss"] > 0 and card["train_seconds"] > 0
    assert card["data_sha256"] and card["base_model"] == str(tiny_model_dir)
    assert (result.path / "loss.png").stat().st_size > 1000
    [info] = list_adapters(tmp_path)
    assert info.name == f"tiny-{method}" and info.card["method"] == method
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind
    base, tuned = logits(tiny_model_dir), logits(tiny_model_dir, result.path)
    assert not torch.allclose(base, tuned)
    generator = LocalGenerator(str(tiny_model_dir), device="cpu", adapter=str(result.path))
    with torch.inference_mode():  # the generator answers with the adapter applied, not the bare base model
        served = generator.model(torch.tensor([[1, 2, 3, 4, 5, 6]])).logits
    assert torch.allclose(served, tuned, atol=1e-5) and not torch.allclose(served, base)
    assert isinstance(generator.generate(base_messages("Hello?"), max_tokens=4), str)
    assert card["vllm_servable"] is (method in ("lora", "rslora", "lora-fa", "loraplus"))
    # "auto": bf16 mixed precision where the CPU computes it natively (AVX512-BF16 / AMX), else fp32
    assert card["precision"] == ("bf16" if cpu_has_bf16() else "fp32")


def test_method_flags_reach_the_saved_adapter(tiny_model_dir, data_dir, tmp_path):
    rslora = read_adapter(train(tiny_config(tiny_model_dir, data_dir, tmp_path, "rslora")).path)
    dora = read_adapter(train(tiny_config(tiny_model_dir, data_dir, tmp_path, "dora")).path)
    vera = read_adapter(train(tiny_config(tiny_model_dir, data_dir, tmp_path, "vera")).path)
    assert rslora.config["use_rslora"] and rslora.vllm_problem is None
    assert dora.config["use_dora"] and dora.vllm_problem == "vLLM does not support DoRA"
    assert vera.peft_type == "VERA" and "not VERA" in vera.vllm_problem


def test_optimizers_give_b_and_embeddings_their_own_rates(tiny_model_dir, data_dir, tmp_path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    def groups(method, **changes):
        config = tiny_config(tiny_model_dir, data_dir, tmp_path, method, lr=1e-3, **changes)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), peft_config(config))
        return model, make_optimizer(model, config)

    _, loraplus = groups("loraplus", loraplus_ratio=16)
    assert sorted({g["lr"] for g in loraplus.param_groups if g["params"]}) == pytest.approx([1e-3, 16e-3])
    model, lorafa = groups("lora-fa")
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_A" in n)
    _, embed = groups("lora", embedding_lr=1e-5)
    assert [g["lr"] for g in embed.param_groups] == [1e-3, 1e-5]
    _, plain = groups("lora")
    assert plain is None  # the Trainer's own AdamW


def test_loftq_runs_on_cuda_and_says_it_needs_cuda_elsewhere(tiny_model_dir, data_dir, tmp_path):
    config = tiny_config(tiny_model_dir, data_dir, tmp_path, "lora", init="loftq")
    if torch.cuda.is_available():  # a GPU machine: LoftQ initialises and the adapter is marked unservable
        assert train(config).card["vllm_servable"] is False
        return
    with pytest.raises(FinetuneError, match="LoftQ initialisation needs a CUDA GPU"):
        train(config)


def test_bad_configs_and_existing_names_are_refused(tiny_model_dir, data_dir, tmp_path):
    with pytest.raises(ValueError, match="method must be one of lora, rslora"):
        tiny_config(tiny_model_dir, data_dir, tmp_path, "qlora")
    with pytest.raises(AdapterError, match="adapter name '../x' is invalid"):
        tiny_config(tiny_model_dir, data_dir, tmp_path, "lora", name="../x")
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32; got 'fp8'"):
        tiny_config(tiny_model_dir, data_dir, tmp_path, "lora", precision="fp8")
    train(tiny_config(tiny_model_dir, data_dir, tmp_path, "lora"))
    with pytest.raises(FinetuneError, match="adapter 'tiny-lora' already exists"):
        train(tiny_config(tiny_model_dir, data_dir, tmp_path, "lora"))
    with pytest.raises(FinetuneError, match="cannot load base model"):
        train(tiny_config(str(tmp_path / "no-model"), data_dir, tmp_path, "lora", name="other"))


def test_registry_resolves_names_and_paths_and_removes(tiny_model_dir, data_dir, tmp_path):
    result = train(tiny_config(tiny_model_dir, data_dir, tmp_path, "lora"))
    assert resolve_adapter("tiny-lora", tmp_path).path == result.path.resolve()
    assert resolve_adapter(str(result.path), tmp_path / "elsewhere").name == "tiny-lora"
    (tmp_path / "not-an-adapter").mkdir()
    assert [info.name for info in list_adapters(tmp_path)] == ["tiny-lora"]
    with pytest.raises(AdapterError, match=r"no adapter named 'nope' in .* \(registered: tiny-lora, reader\)"):
        resolve_adapter("nope", tmp_path)
    # the reader adapter ships inside the package: found by name after the registry, never removed
    assert [(i.name, i.shipped) for i in list_adapters(tmp_path, shipped=True)] == [("tiny-lora", False),
                                                                                  ("reader", True)]
    reader = resolve_adapter("reader", tmp_path)
    assert reader.shipped and reader.vllm_problem is None and reader.base_model == "SmolLM2-135M-Instruct"
    with pytest.raises(AdapterError, match="'reader' ships with the product"):
        remove_adapter("reader", tmp_path)
    remove_adapter("tiny-lora", tmp_path)
    assert list_adapters(tmp_path) == []


def rag(*args, env):
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_cli_data_train_list_ask_remove(sample_collection, tiny_model_dir, tmp_path):
    """The user's path with the tiny model standing in for SmolLM2 (plumbing only)."""
    env = {**os.environ, "RAG_HOME": str(sample_collection.folder.parent), "RAG_COLLECTION": "sample",
           "RAG_ADAPTERS_DIR": str(tmp_path / "adapters"), "RAG_MODEL": str(tiny_model_dir)}
    made = rag("finetune-data", "--out", str(tmp_path / "d"), "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["train"] > 0
    trained = rag("finetune", "--data", str(tmp_path / "d"), "--max-steps", "2", "--name", "demo", "--rank", "4",
                  "--check", "0", env=env)
    assert trained.returncode == 0, trained.stderr
    assert "adapter 'demo' (lora, r=4): 2 steps" in trained.stdout
    listed = json.loads(rag("adapters", "--json", env=env).stdout)
    assert [(a["name"], a["shipped"]) for a in listed] == [("demo", False), ("reader", True)]
    assert listed[0]["card"]["steps"] == 2
    asked = rag("ask", "--adapter", "demo", "--max-tokens", "4", "--json", "Who designed the lighthouse?", env=env)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["sources"]
    wrong = rag("ask", "--adapter", "nope", "hello", env=env)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: no adapter named 'nope'")
    unfit = rag("ask", "--adapter", "reader", "hello", env=env)  # the shipped adapter is SmolLM2's, not the tiny model's
    assert unfit.returncode == 2 and "error: adapter 'reader' ships for the embedded SmolLM2" in unfit.stderr
    again = rag("finetune", "--data", str(tmp_path / "d"), "--max-steps", "2", "--name", "demo", env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = rag("finetune", "--data", str(tmp_path / "none"), "--name", "x", env=env)
    assert missing.returncode == 2 and "train.jsonl: missing" in missing.stderr
    quiet = rag("finetune", "--data", str(tmp_path / "d"), "--max-steps", "1", "--name", "demo2", "--rank", "4",
                "--check", "0", "--json", env=env)
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["card"]["steps"] == 1  # stdout is one JSON object
    rag("adapters", "--remove", "demo2", env=env)
    removed = rag("adapters", "--remove", "demo", env=env)
    assert removed.returncode == 0 and [a["name"] for a in json.loads(rag("adapters", "--json", env=env).stdout)] == [
        "reader"]
    shipped = rag("adapters", "--remove", "reader", env=env)
    assert shipped.returncode == 2 and shipped.stderr.startswith("error: adapter 'reader' ships with the product")


@pytest.mark.slow
def test_smollm2_learns_a_fact_it_did_not_know(fact_adapter, smollm2_dir):
    card = fact_adapter.card
    assert card["heldout_recall_before"] == 0.0 and card["heldout_recall_after"] == 1.0
    assert card["final_eval_loss"] < 1.0
    messages = base_messages(FACT_HELDOUT)
    tuned = LocalGenerator(str(smollm2_dir), device="cpu", adapter=str(fact_adapter.path))
    assert "Lindqvist" in tuned.generate(messages, max_tokens=40)
