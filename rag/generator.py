"""Generation: one `Generator` protocol, two implementations, and the guard on what they send.

- `OpenAIGenerator`: any OpenAI-compatible server (vLLM, llama.cpp server, ...) through the official
  `openai` client.
- `LocalGenerator`: a Hugging Face causal LM in-process with transformers (the embedded default is
  SmolLM2-135M-Instruct; see rag/models.py for why transformers and not llama.cpp).
- `ControlTokens`: makes a tokenizer's control markers (<|im_start|>, ...) plain text in untrusted
  message content, so a document cannot open a turn of its own.

It does not build prompts or retrieve.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from rag.errors import RagError

Message = dict[str, str]
T = TypeVar("T")

# Inserted after a marker's first character: "<\u2060|im_start|>" is ordinary text to the tokenizer
# and still reads as the marker to the model. A space is the fallback for a tokenizer whose
# normalizer drops the invisible WORD JOINER (and so would re-form the marker).
JOINERS = ("\u2060", " ")
# Used only when the served model's tokenizer cannot be had: spans shaped like the control markers
# of the common chat formats (<|im_start|>, <|eot_id|>, <start_of_turn>, </s>, [INST], [/INST]).
# "[1]"-style citations are left alone; a span holding a joiner is already broken.
MARKER_SHAPES = re.compile(r"<[^\s<>\u2060]{1,40}>|\[/?[A-Z][A-Z_]+\]")

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_FIRST_TOKEN_TIMEOUT = 30.0
RETRY_STATUSES = (408, 409, 429)  # and every 5xx: the openai client's own choice
# The most alternatives per token that OpenAI's API (and vLLM's default max_logprobs) gives.
TOP_LOGPROBS = 20
YES_NO = ("yes", "no")  # the words `yes_probability` weighs, in any case, with or without a leading space


class GenerationError(RagError):
    """The model could not answer: server unreachable, slow, or returned an error."""


class Generator(Protocol):
    name: str

    def generate(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> str: ...

    def stream(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> Iterator[str]:
        """Yields text pieces whose concatenation equals `generate`'s answer."""
        ...

    def yes_probability(self, conversations: list[list[Message]]) -> list[float]:
        """Per conversation, the model's p(yes) / (p(yes) + p(no)) for the first token of its reply
        (the LLM reranker's score, rag/rerank.py); untrusted content is guarded as in `generate`."""
        ...


class ControlTokens:
    """One tokenizer's control markers, and how to make them plain text in untrusted content.

    A chat template pastes message content between its own markers, and the tokenizer then turns
    every marker it finds into the control token, whoever wrote it: a document containing
    "<|im_end|><|im_start|>system ..." opens a real system turn. `neutralise` puts a joiner after
    each marker's first character. Only content is touched: the template's own markers stay, and
    system messages (we write them) are trusted.

    It stops a document from forging turns; it does not stop a model from obeying instructions
    written as plain text in it (the system prompt asks it not to; a 135M model often does anyway).
    """

    def __init__(self, markers: Iterable[str], joiner: str = JOINERS[0], source: str = "",
                 pattern: re.Pattern[str] | None = None):
        # Longest first, so a marker wins over one that is its prefix. A one-character marker cannot
        # be broken by an insertion; no chat tokenizer we know of has one.
        self.markers = sorted({m for m in markers if len(m) > 1}, key=len, reverse=True)
        if any(joiner in m for m in self.markers):  # neutralise would never finish
            raise ValueError(f"the joiner {joiner!r} occurs in a marker")
        self.joiner = joiner
        self.source = source  # where the markers came from, for messages and tests
        if pattern is None and self.markers:
            pattern = re.compile("|".join(map(re.escape, self.markers)))
        self._pattern = pattern

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, source: str = "") -> "ControlTokens":
        """Every special token, and every added token that is marked special or that the chat template
        writes (Qwen's <think> is added but not "special", and still becomes one id)."""
        template = tokenizer.chat_template or ""
        if isinstance(template, dict):  # named templates (default, tool_use, ...)
            template = "\n".join(template.values())
        markers = set(tokenizer.all_special_tokens)
        markers |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special or t.content in template}
        markers = {m for m in markers if m.strip()}  # added whitespace runs are not markers
        ids = set(tokenizer.convert_tokens_to_ids(sorted(markers)))
        for joiner in JOINERS:
            if any(joiner in m for m in markers):
                continue
            guard = cls(markers, joiner, source)
            # The tokenizer has the last word: its normalizer may drop the joiner and re-form the marker.
            if not any(ids & set(tokenizer.encode(guard.neutralise(m), add_special_tokens=False)) for m in markers):
                return guard
        raise GenerationError(f"cannot neutralise the control tokens of the tokenizer {source}: it re-forms them")

    @classmethod
    def shaped(cls) -> "ControlTokens":
        """A guess for when the model's tokenizer is unknown: breaks every marker-shaped span."""
        return cls((), source="marker shapes (tokenizer unknown)", pattern=MARKER_SHAPES)

    def neutralise(self, text: str) -> str:
        """`text` with every marker broken; remove the joiners and it is `text` again."""
        if self._pattern is None:
            return text
        # Repeat: breaking one marker can leave an overlapping one whole ("<|a|>" and "|a|>").
        while True:
            broken = self._pattern.sub(lambda m: m[0][0] + self.joiner + m[0][1:], text)
            if broken == text:
                break
            text = broken
        # The template's own text could complete a marker begun at the content's end ("...<|im_" +
        # "end|>"), or end one that the content's start continues: pad such an edge.
        if any(text.endswith(m[:i]) for m in self.markers for i in range(1, len(m))):
            text += self.joiner
        if any(text.startswith(m[i:]) for m in self.markers for i in range(1, len(m))):
            text = self.joiner + text
        return text

    def neutralise_messages(self, messages: list[Message]) -> list[Message]:
        """Copies of the messages with every non-system text content neutralised (content given as a list
        of parts, for images, is passed as is: this app sends text only)."""
        return [m if m.get("role") == "system" or not isinstance(m.get("content"), str)
                else {**m, "content": self.neutralise(m["content"])} for m in messages]


class OpenAIGenerator:
    """A model behind an OpenAI-compatible server (vLLM, llama.cpp server, ...).

    Every request streams, `generate` included: a non-streamed reply sends nothing until the whole
    answer is done, so only a stream shows a hung server early; and one parser checks every reply,
    naming the URL and what was wrong. Time limits, so that a dead or hung server is known in seconds:

    - `connect_timeout` (5 s): opening the connection; a port nobody listens on fails at once.
    - `first_token_timeout` (30 s): the longest silence: before the reply's headers, before the
      first token, between two tokens.
    - `timeout` (settings.request_timeout, 120 s): the whole answer, retries included; checked as
      pieces arrive, so an answer fails by timeout + first_token_timeout at the latest.
    - `max_retries`: refused connections and 408/409/429/5xx answers are retried after 0.5 s, 1 s,
      2 s, ... within `timeout`; a timeout is not retried (a server that hung once hangs again).

    Control tokens: vLLM renders the chat template on the server and tokenizes the result whole, with
    no option to keep content from becoming control tokens, so content is neutralised here before it
    is sent, with the served model's tokenizer: `tokenizer` (a HF folder or name) when given, else the
    folder vLLM reports as the model's `root` in /v1/models (an adapter's: its `parent`'s) when that
    folder exists on this machine (`rag serve` here). Otherwise (a remote server, one that reports no
    root) marker-shaped spans are broken instead: right for the common chat formats, but a guess,
    not the model's own list; pass `tokenizer` to be sure.
    """

    def __init__(self, base_url: str, model: str = "", api_key: str = "EMPTY", timeout: float = 120.0,
                 max_retries: int = 2, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 first_token_timeout: float = DEFAULT_FIRST_TOKEN_TIMEOUT, tokenizer: str | None = None):
        from openai import OpenAI, Timeout

        self.base_url = base_url
        self.timeout = timeout
        self.first_token_timeout = min(first_token_timeout, timeout)
        self.connect_timeout = min(connect_timeout, timeout)
        self.max_retries = max_retries
        # httpx's read timeout bounds each wait for bytes, not the whole reply: the first-token timeout.
        # The client's own retries are off: it would retry timeouts too (see _call).
        self.client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=0,
                             timeout=Timeout(self.first_token_timeout, connect=self.connect_timeout))
        self._model = model
        self._tokenizer = tokenizer
        self._control_tokens: ControlTokens | None = None

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
            return [card["id"] for card in self._model_cards()]

    @property
    def control_tokens(self) -> ControlTokens:
        """The served model's control markers, from its tokenizer when found (see the class docstring)."""
        if self._control_tokens is None:
            with self._errors():
                source = self._tokenizer or self._served_folder()
            if source is None:
                self._control_tokens = ControlTokens.shaped()
            else:
                from transformers import AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(source)
                except (OSError, ValueError) as exc:
                    raise GenerationError(f"cannot load the tokenizer {source} for {self.base_url}: {exc}") from None
                self._control_tokens = ControlTokens.from_tokenizer(tokenizer, source)
        return self._control_tokens

    def generate(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> str:
        return "".join(self._pieces(messages, max_tokens=max_tokens, temperature=temperature))

    def generate_json(self, messages: list[Message], schema: dict, *, name: str = "reply", max_tokens: int = 800) -> str:
        """Greedy text held to a JSON schema by the server's structured output (vLLM: xgrammar)."""
        response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        return "".join(self._pieces(messages, max_tokens=max_tokens, temperature=0.0,
                                    response_format=response_format))

    def stream(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> Iterator[str]:
        return self._pieces(messages, max_tokens=max_tokens, temperature=temperature)

    def yes_probability(self, conversations: list[list[Message]], *, concurrency: int = 8) -> list[float]:
        """From the first reply token's `top_logprobs` (a chat completion with max_tokens=1, logprobs
        on), asked `concurrency` at a time so that the server batches them. Only the top 20
        alternatives are known: a word not among them counts as probability 0, and when neither
        word is there the answer is 0.5 (no opinion). The request is not streamed: one token comes
        within the first-token timeout or not at all."""
        from concurrent.futures import ThreadPoolExecutor

        if not conversations:
            return []
        with self._errors():
            _ = (self.name, self.control_tokens)  # resolved once here, not raced for by the threads below
        with ThreadPoolExecutor(min(concurrency, len(conversations))) as pool:
            return list(pool.map(self._yes_probability, conversations))

    def _yes_probability(self, messages: list[Message]) -> float:
        deadline = time.monotonic() + self.timeout
        body = {"model": self.name, "messages": self.control_tokens.neutralise_messages(messages), "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        with self._errors():
            reply = self._call(lambda: self.client.chat.completions.with_raw_response.create(**body), deadline)
            data = _json_body(reply.http_response, self.base_url)
        return _yes_share(data, self.base_url)

    def _pieces(self, messages: list[Message], **params: Any) -> Iterator[str]:
        """The answer's text pieces; any reply that is not a complete chat completion raises."""
        deadline = time.monotonic() + self.timeout
        url = self.base_url
        with self._errors():
            body = {"model": self.name, "messages": self.control_tokens.neutralise_messages(messages), **params}
            with self._call(lambda: self.client.chat.completions.create(**body, stream=True), deadline) as events:
                if "text/event-stream" not in events.response.headers.get("content-type", ""):
                    # A whole reply: a server that ignores stream=True, or one that sent something else.
                    yield _completion_text(_json_body(events.response, url), url)
                    return
                finished = False
                for event in events:
                    if time.monotonic() > deadline:
                        raise GenerationError(f"the model server at {url} did not finish its answer "
                                              f"within {self.timeout:g} s (timeout)")
                    piece, done = _chunk_text(event, url)
                    finished = finished or done  # a usage-only chunk may follow the last one
                    if piece:
                        yield piece
                if not finished:
                    raise GenerationError(f"the model server at {url} ended its stream before the answer was complete "
                                          "(no finish_reason)")

    def _model_cards(self) -> list[dict]:
        """/v1/models as sent: vLLM adds each model's `root` (its folder) and an adapter's `parent`."""
        reply = self._call(self.client.models.with_raw_response.list, time.monotonic() + self.timeout)
        data = _json_body(reply.http_response, self.base_url)
        cards = data.get("data") if isinstance(data, dict) else None
        if not isinstance(cards, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in cards):
            raise GenerationError(f"the model server at {self.base_url} sent no model list: {_snippet(data)}")
        return cards

    def _served_folder(self) -> str | None:
        """The served model's folder as the server reports it, when it holds a tokenizer on this machine."""
        import openai

        try:
            cards = {card["id"]: card for card in self._model_cards()}
        except openai.NotFoundError:  # a server without /v1/models
            return None
        card = cards.get(self.name, {})
        if card.get("parent") in cards:  # a LoRA adapter runs on its base model's tokenizer
            card = cards[card["parent"]]
        root = card.get("root")
        return root if isinstance(root, str) and Path(root, "tokenizer_config.json").is_file() else None

    def _call(self, request: Callable[[], T], deadline: float) -> T:
        """`request()`, retried with backoff on a refused connection or a 408/409/429/5xx answer."""
        import openai

        attempt = 0
        while True:
            try:
                return request()
            except openai.APIError as exc:
                delay = 0.5 * 2**attempt
                if not _retryable(exc) or attempt >= self.max_retries or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            attempt += 1

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn the openai client's exceptions into one-line GenerationErrors that name the URL."""
        import openai

        url = self.base_url
        try:
            yield
        except openai.APITimeoutError as exc:  # a subclass of APIConnectionError: test it first
            if type(exc.__cause__).__name__ == "ConnectTimeout":  # by name: httpx's or httpx2's
                raise GenerationError(f"cannot connect to the model server at {url} within {self.connect_timeout:g} s "
                                      "(connect_timeout)") from None
            raise GenerationError(f"the model server at {url} sent nothing for {self.first_token_timeout:g} s "
                                  "(first_token_timeout)") from None
        except openai.APIConnectionError:
            raise GenerationError(f"cannot reach the model server at {url} (is it running?)") from None
        except openai.APIStatusError as exc:
            detail = _status_detail(exc)
            raise GenerationError(f"the model server at {url} answered {exc.status_code}: {detail}") from None
        except openai.APIError as exc:  # an error event inside a stream
            raise GenerationError(f"the model server at {url} sent an error: {_snippet(exc.message)}") from None
        except json.JSONDecodeError as exc:  # a stream event that is not JSON
            raise GenerationError(f"the model server at {url} sent invalid JSON: {_snippet(exc.doc)}") from None


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return False
    if isinstance(exc, openai.APIConnectionError):  # refused or reset: the server may be starting
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code in RETRY_STATUSES or exc.status_code >= 500)


def _snippet(value: Any, limit: int = 100) -> str:
    """`value` on one line, cut to `limit` characters: enough to recognise an nginx page or a stray JSON."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_detail(exc: Any) -> str:
    """The message of an error answer: its JSON's `message`, else the start of its body."""
    body = exc.body  # the openai client's parse: the JSON's "error" object, or the text
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _snippet(body["message"])
    return _snippet(body) if body else "(empty body)"


def _json_body(response: Any, url: str) -> Any:
    """The JSON of a whole reply (an httpx response); anything else is the server's error."""
    body = response.read().decode("utf-8", errors="replace")
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        kind = response.headers.get("content-type") or "no content type"
        what = "invalid JSON" if "json" in kind else f"{kind.split(';')[0]}, not JSON"
        raise GenerationError(f"the model server at {url} sent {what}: {_snippet(body) or '(empty body)'}") from None


def _completion_text(data: Any, url: str) -> str:
    """The answer in a whole chat completion; JSON of another shape is the server's error."""
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise GenerationError(f"the model server at {url} sent JSON that is not a chat completion "
                              f"(no choices[0].message): {_snippet(data)}") from None
    if text is not None and not isinstance(text, str):
        raise GenerationError(f"the model server at {url} sent a chat completion whose content is not text: "
                              f"{_snippet(data)}")
    return text or ""


def _yes_share(data: Any, url: str) -> float:
    """p(yes) / (p(yes) + p(no)) from a chat completion's first-token `top_logprobs`."""
    try:
        top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        pairs = [(str(entry["token"]).strip().lower(), float(entry["logprob"])) for entry in top]
    except (KeyError, IndexError, TypeError, ValueError):
        raise GenerationError(f"the model server at {url} sent no top_logprobs for the first token of the reply "
                              f"(the LLM reranker needs a server that returns logprobs, as vLLM does): "
                              f"{_snippet(data)}") from None
    yes, no = (sum(math.exp(logprob) for token, logprob in pairs if token == word) for word in YES_NO)
    return yes / (yes + no) if yes + no > 0 else 0.5


def _chunk_text(chunk: Any, url: str) -> tuple[str, bool]:
    """(text piece, whether the answer is finished) of one streamed chunk, which the openai client
    builds without validating: a chunk of another shape is the server's error."""
    choices = getattr(chunk, "choices", None)
    if not isinstance(choices, list):
        raise GenerationError(f"the model server at {url} sent a stream event that is not a chat completion chunk: "
                              f"{_snippet(chunk)}")
    if not choices:  # a usage-only chunk
        return "", False
    text = getattr(getattr(choices[0], "delta", None), "content", None)
    if text is not None and not isinstance(text, str):
        raise GenerationError(f"the model server at {url} sent a stream chunk whose content is not text: "
                              f"{_snippet(chunk)}")
    return text or "", getattr(choices[0], "finish_reason", None) is not None


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
        self.control_tokens = ControlTokens.from_tokenizer(self.tokenizer, model_path)
        self._lock = threading.Lock()  # one generation at a time per loaded model
        self._yes_no: tuple[list[int], list[int]] | None = None  # token ids, found on first use

    def encode(self, messages: list[Message]) -> Any:
        """The model's input (input_ids, attention_mask): the chat template over the messages, with
        their untrusted content neutralised first."""
        return self.tokenizer.apply_chat_template(
            self.control_tokens.neutralise_messages(messages), add_generation_prompt=True, return_tensors="pt",
            return_dict=True,
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

        inputs = self.encode(messages)
        with self._lock, torch.inference_mode():
            out = self.model.generate(**inputs, **self._gen_kwargs(max_tokens, temperature))
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def yes_probability(self, conversations: list[list[Message]], *, batch_size: int = 8) -> list[float]:
        """From the next-token distribution after each conversation's assistant prompt: one forward
        pass per batch of similar lengths, left-padded, computing the logits of the last position only."""
        import torch

        rows = [self.encode(c)["input_ids"][0] for c in conversations]  # (length,) each
        yes, no = self._yes_no_ids()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # little padding within a batch
        scores = [0.0] * len(rows)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long, device=self.device)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                ids[row, width - len(rows[i]):] = rows[i]
                mask[row, width - len(rows[i]):] = 1
            # Positions counted from each row's first real token, as if it were alone (rotary
            # positions are shift-invariant anyway; learned absolute ones are not).
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with self._lock, torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=1).logits[:, -1].float()  # (batch, vocab)
            logp = torch.log_softmax(logits, dim=-1)
            log_odds = torch.logsumexp(logp[:, yes], dim=-1) - torch.logsumexp(logp[:, no], dim=-1)
            for row, i in enumerate(batch):
                scores[i] = float(torch.sigmoid(log_odds[row]))
        return scores

    def _yes_no_ids(self) -> tuple[list[int], list[int]]:
        """The single-token spellings of "yes" and "no" (yes, Yes, YES, " yes", ...) in this vocabulary."""
        if self._yes_no is None:
            found = []
            for word in YES_NO:
                spellings = {prefix + form for prefix in ("", " ") for form in (word, word.capitalize(), word.upper())}
                ids = {tuple(self.tokenizer.encode(s, add_special_tokens=False)) for s in spellings}
                found.append(sorted(i[0] for i in ids if len(i) == 1))
            if not all(found):
                raise GenerationError(f"the tokenizer of {self.name} has no single token for 'yes' or 'no'; "
                                      "it cannot be used as an LLM reranker")
            self._yes_no = (found[0], found[1])
        return self._yes_no

    def stream(self, messages: list[Message], *, max_tokens: int = 200, temperature: float = 0.0) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        inputs = self.encode(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []
        stop = threading.Event()  # set when the consumer stops reading (a loop guard, a closed stream)

        class StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(**inputs, **self._gen_kwargs(max_tokens, temperature), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([StopWhenAsked()]))
            except BaseException as exc:  # surfaced in the consuming thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield from (piece for piece in streamer if piece)
        finally:  # also when the consumer closes this generator early: the model stops at the next token
            stop.set()
            thread.join()
        if failure:
            raise GenerationError(f"local generation failed: {failure[0]}") from failure[0]
