"""End to end in a real browser: Debian's chromium, driven by Playwright, against `streamlit run`."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from rag.serving import free_port

CHROMIUM = Path("/usr/bin/chromium")


def _serve(home: Path, tmp_path: Path, **env_extra: str):
    port = free_port()
    env = {**os.environ, "RAG_HOME": str(home), "RAG_MAX_TOKENS": "40", "OMP_WAIT_POLICY": "PASSIVE", **env_extra}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text()[-2000:])
    return url, proc


@pytest.fixture
def streamlit_server(sample_collection, smollm2_dir, tmp_path):
    url, proc = _serve(sample_collection.folder.parent, tmp_path, RAG_COLLECTION="sample")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def empty_streamlit_server(tmp_path):
    url, proc = _serve(tmp_path / "no-collections", tmp_path)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def _browser(pw):
    assert CHROMIUM.exists(), "Debian chromium is missing: apt-get install chromium (make test does it)"
    return pw.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run"],
    )


@pytest.mark.slow
def test_chat_in_chromium(streamlit_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(streamlit_server)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_visible(timeout=60_000)
        box.fill("When was the Korvik Island Lighthouse first lit?")
        box.press("Enter")
        sources = page.get_by_text("Sources (3)")
        expect(sources).to_be_visible(timeout=180_000)  # appears once the streamed answer ends
        reply = page.get_by_test_id("stChatMessage").nth(1)
        expect(reply).to_contain_text("1887")
        # the [n] markers link to their sources, where the supporting sentence is highlighted
        marker = reply.locator('a[href^="#src-1-"]').first
        expect(marker).to_be_visible()
        target = marker.get_attribute("href")[1:]
        expect(page.locator(f'[id="{target}"]')).to_have_count(1)
        highlight = page.locator('span[style*="background"]', has_text="14 March 1887").first
        expect(highlight).to_be_visible()
        expect(page.get_by_text("korvik_lighthouse.md").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
        browser.close()
    assert (tmp_path / "chat.png").stat().st_size > 10_000


@pytest.mark.slow
def test_newcomer_without_collections_in_chromium(empty_streamlit_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(empty_streamlit_server)
        expect(page.get_by_text("There is no collection yet").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("rag ingest PATH --collection default").first).to_be_visible()
        expect(page.get_by_text("PDF, text, Markdown or HTML")).to_be_visible()  # the upload box is open
        page.screenshot(path=str(tmp_path / "empty.png"), full_page=True)
        browser.close()
