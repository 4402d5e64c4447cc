"""Malformed replies from an OpenAI-compatible server: each ends in one GenerationError that names the
URL and what was wrong, in `generate` and in `stream` alike, and a hung server is known in seconds."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag.generator import GenerationError, OpenAIGenerator
from rag.serving import free_port

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def _event(content: str | None, finish: str | None = None) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


WHOLE = {"id": "c1", "object": "chat.completion", "created": 0, "model": "fake",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Blue."}, "finish_reason": "stop"}]}
NGINX = b"<html><head><title>Welcome to nginx!</title></head><body>" + b"<p>It works.</p>" * 40 + b"</body></html>"

# case: (status, content type, body) sent to every chat request under /<case>/v1
REPLIES: dict[str, tuple[int, str, bytes]] = {
    "good-stream": (200, "text/event-stream",
                    _event("Bl") + _event("ue.") + _event(None, "stop") + b"data: [DONE]\n\n"),
    "whole-json": (200, "application/json", json.dumps(WHOLE).encode()),  # a server that ignores stream=True
    "html": (200, "text/html", NGINX),
    "no-choices": (200, "application/json", b'{"id": "c1", "object": "chat.completion", "model": "fake"}'),
    "invalid-json": (200, "application/json", b'{"choices": [{"message": '),
    "garbage-stream": (200, "text/event-stream", b"data: <b>not json</b>\n\n"),
    "empty-stream": (200, "text/event-stream", b""),
    "cut-stream": (200, "text/event-stream", _event("Bl")),
    "error-event": (200, "text/event-stream", b'data: {"error": {"message": "out of KV cache", "code": 500}}\n\n'),
    "error-500": (500, "text/html", NGINX),
}


class FakeServer(ThreadingHTTPServer):
    """A fake OpenAI-compatible server on 127.0.0.1: a real one (vLLM) does not send nginx pages, drop
    `choices` or hang on demand. The client side (openai, httpx, our parsing) is all real.

    /<case>/v1/models lists one model, "fake", whose `root` is no folder here; /<case>/v1/chat/completions
    sends REPLIES[case], or for "hang" nothing at all, or for "trickle" a token every 0.2 s, never finishing."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.stop = threading.Event()  # set on teardown: releases the hanging handlers

    def url(self, case: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{case}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/v1/models"):
            self._send(200, "application/json", json.dumps(
                {"object": "list", "data": [{"id": "fake", "object": "model", "root": "/no/such/folder"}]}).encode())
        else:
            self._send(404, "application/json", b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        case = self.path.split("/")[1]
        if case == "hang":
            self.server.stop.wait(60)
        elif case == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for _ in range(100):
                if self.server.stop.wait(0.2):
                    break
                try:
                    self.wfile.write(_event("la "))
                    self.wfile.flush()
                except OSError:  # the client gave up
                    break
        else:
            self._send(*REPLIES[case])

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()  # no Content-Length: HTTP/1.0, the body ends when the connection closes
        self.wfile.write(body)


@pytest.fixture(scope="module")
def fake_server():
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


def _answer(generator: OpenAIGenerator, mode: str) -> str:
    if mode == "generate":
        return generator.generate(MESSAGES, max_tokens=8)
    return "".join(generator.stream(MESSAGES, max_tokens=8))


MODES = ["generate", "stream"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["good-stream", "whole-json"])
def test_well_formed_replies_are_read(fake_server, case, mode):
    """The fake speaks the protocol: the failures below are about the replies, not the fake."""
    generator = OpenAIGenerator(fake_server.url(case), "fake", timeout=5, max_retries=0)
    assert _answer(generator, mode) == "Blue."


BAD = {
    "html": r"sent text/html, not JSON: <html><head><title>Welcome to nginx!",
    "no-choices": r"sent JSON that is not a chat completion \(no choices\[0\]\.message\)",
    "invalid-json": r'sent invalid JSON: \{"choices": \[\{"message":',
    "garbage-stream": r"sent invalid JSON: <b>not json</b>",
    "empty-stream": r"ended its stream before the answer was complete",
    "cut-stream": r"ended its stream before the answer was complete",
    "error-event": r"sent an error: out of KV cache",
    "error-500": r"answered 500: <html><head><title>Welcome to nginx!",
    "hang": r"sent nothing for 1 s \(first_token_timeout\)",
    "trickle": r"did not finish its answer within 2 s \(timeout\)",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_reply_is_one_line_naming_the_url(fake_server, case, mode):
    url = fake_server.url(case)
    generator = OpenAIGenerator(url, "fake", timeout=2, first_token_timeout=1, max_retries=1)
    with pytest.raises(GenerationError, match=re.escape(f"the model server at {url} ") + BAD[case]) as caught:
        _answer(generator, mode)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("mode", MODES)
def test_hung_server_is_known_in_seconds_despite_retries_and_budget(fake_server, mode):
    """A server that accepts and never answers fails after the first-token timeout: not after the whole
    budget (60 s here), and not once per retry."""
    generator = OpenAIGenerator(fake_server.url("hang"), "fake", timeout=60, first_token_timeout=1, max_retries=2)
    start = time.monotonic()
    with pytest.raises(GenerationError, match=r"sent nothing for 1 s"):
        _answer(generator, mode)
    assert time.monotonic() - start < 10


def test_unanswered_connection_is_a_connect_timeout():
    """A listening socket whose backlog is full: the kernel drops further handshakes, as a firewall
    that blackholes the port would (a real one cannot be had here)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}/v1"
    generator = OpenAIGenerator(url, "m", timeout=60, connect_timeout=1, max_retries=2)
    try:
        start = time.monotonic()
        with pytest.raises(GenerationError, match=re.escape(f"cannot connect to the model server at {url} within 1 s")):
            generator.generate(MESSAGES)
        assert time.monotonic() - start < 10  # not retried
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_cli_stream_reports_a_bad_reply_and_fails(fake_server, tmp_path, monkeypatch, capsys):
    """The issue's symptom: `rag ask --stream` printed an empty answer and exited 0."""
    from rag.cli import main

    monkeypatch.chdir(tmp_path)  # no rag.toml
    url = fake_server.url("html")
    code = main(["ask", "--backend", "server", "--base-url", url, "--model", "fake", "--mode", "base", "--stream",
                 "Name a colour."])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: the model server at {url} sent text/html, not JSON") and "\n" not in err
