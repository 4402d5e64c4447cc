"""Generation: one `Generator` protocol, two implementations.

- `OpenAIGenerator`: any OpenAI-compatible server (vLLM, llama.cpp server, ...) through the official
  `openai` client.
- `LocalGenerator`: a Hugging Face causal LM in-process with transformers (the embedded default is
  SmolLM2-135M-Instruct; see rag/models.py for why transformers and not llama.cpp).

It does not build prompts or retrieve.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import ContextManager, Iterator, Protocol

Message = dict[str, str]


class GenerationError(Exception):
    """The model could not answer: server unreachable, slow, or returned an error."""


class Generator(Protocol):
    name: str

    def generate(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> str: ...

    def stream(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> Iterator[str]:
        """Yields text pieces whose concatenation equals `generate`'s answer."""
        ...


class OpenAIGenerator:
    def __init__(self, base_url: str, model: str = "", api_key: str = "EMPTY", timeout: float = 120.0,
                 max_retries: int = 2):
        from openai import OpenAI

        self.base_url = base_url
        # The client retries connection errors, 408/409/429 and 5xx with exponential backoff.
        self.client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries)
        self._model = model

    @property
    def name(self) -> str:
        if not self._model:
            models = self.list_models()
            if not models:
                raise GenerationError(f"the model server at {self.base_url} serves no model")
            self._model = models[0]
        return self._model

    def list_models(self) -> list[str]:
        with self._errors():
            return [m.id for m in self.client.models.list()]

    def generate(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> str:
        with self._errors():
            response = self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=max_tokens, temperature=temperature
            )
        return response.choices[0].message.content or ""

    def generate_json(self, messages: list[Message], schema: dict, *, name: str = "reply", max_tokens: int = 800) -> str:
        """Greedy text held to a JSON schema by the server's structured output (vLLM: xgrammar)."""
        with self._errors():
            response = self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=max_tokens, temperature=0.0,
                response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}},
            )
        return response.choices[0].message.content or ""

    def stream(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> Iterator[str]:
        with self._errors():
            events = self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True
            )
            for event in events:
                if event.choices and event.choices[0].delta.content:
                    yield event.choices[0].delta.content

    def _errors(self) -> ContextManager[None]:
        return _openai_errors(self.base_url)


@contextmanager
def _openai_errors(url: str) -> Iterator[None]:
    """Turn the openai client's exceptions into one-line GenerationErrors that name the URL."""
    import openai

    try:
        yield
    except openai.APITimeoutError:  # a subclass of APIConnectionError: test it first
        raise GenerationError(f"the model server at {url} did not answer in time") from None
    except openai.APIConnectionError:
        raise GenerationError(f"cannot reach the model server at {url} (is it running?)") from None
    except openai.APIStatusError as exc:
        raise GenerationError(f"the model server at {url} answered {exc.status_code}: {exc.message}") from None


def check_server(base_url: str, api_key: str = "EMPTY", timeout: float = 3.0) -> tuple[list[str] | None, str]:
    """(served model ids, or None when unreachable; a one-line status) for a health indicator."""
    try:
        models = OpenAIGenerator(base_url, api_key=api_key, timeout=timeout, max_retries=0).list_models()
    except GenerationError as exc:
        return None, str(exc)
    return models, f"serving {', '.join(models) or 'no model'}"


class LocalGenerator:
    """A Hugging Face causal LM run in-process (CPU or CUDA); greedy decoding at temperature 0."""

    def __init__(self, model_path: str, device: str = "auto", adapter: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rag.embedding import pick_device

        self.device = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device)
        except OSError as exc:
            raise GenerationError(f"cannot load model from {model_path}: {exc}") from None
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.eval()
        self.name = model_path if not adapter else f"{model_path}+{adapter}"
        self._lock = threading.Lock()  # one generation at a time per loaded model

    def _inputs(self, messages: list[Message]):
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)

    def _gen_kwargs(self, max_tokens: int, temperature: float) -> dict:
        kwargs = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> str:
        import torch

        inputs = self._inputs(messages)
        with self._lock, torch.inference_mode():
            out = self.model.generate(**inputs, **self._gen_kwargs(max_tokens, temperature))
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def stream(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(**inputs, **self._gen_kwargs(max_tokens, temperature), streamer=streamer)
            except BaseException as exc:  # surfaced in the consuming thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if failure:
            raise GenerationError(f"local generation failed: {failure[0]}") from failure[0]
