"""The chat in a real headless Chromium against the real server (`python -m app` in a
subprocess with its own store, the default corpus, the eCFR text of 47 CFR Parts 97 and 80,
ingested by `python -m ingest` as `make run` does: ~1,240 chunks, about 1.5 min here).

Checks the welcome (the parts and their eCFR date) and asks every starter, asks a question,
watches the answer stream in, opens the cited source [1] (its eCFR date once), rates the
answer 👎 with a correction (Chainlit's feedback UI -> our SQLite store), uploads a
document and asks about it. No answer cites a sample document (data/samples).
Screenshots go to test-output/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from bench.load import SAMPLE_CORPUS, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT / "data" / "corpus"  # what `make run` indexes
STARTERS = json.loads((DEFAULT_CORPUS / "ecfr" / "starters.json").read_text())
ECFR_DATE = "2024-11-14"
SAMPLE_NAMES = {p.name for p in SAMPLE_CORPUS.iterdir()}
OUTPUT = ROOT / "test-output"
PUBLIC = ROOT / "public"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (make browser installs it)"
    ),
]


def make_adapter(folder: Path) -> None:
    """A freshly initialised LoRA adapter on the default base (PEFT's own save format)."""
    from peft import LoraConfig, get_peft_model

    from core.modeling import load_base_model

    loaded = load_base_model(quantization="none", device="cpu")
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    get_peft_model(loaded.model, config).save_pretrained(folder)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("browser-server")
    make_adapter(state / "data" / "checkpoints" / "demo" / "final_model")
    with ServerProcess(
        state, corpus=DEFAULT_CORPUS, env={"MAX_NEW_TOKENS": "24"}, startup_timeout=300
    ) as running:
        yield running
        print(running.log_tail())


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(server.url)
        page.locator("#chat-input").wait_for()
        yield page
        browser.close()


def last_answer(page):
    return page.locator('[data-step-type="assistant_message"]').last


def type_and_send(page, text: str) -> None:
    # Typed like a user: Chainlit's composer ignores programmatic fills.
    page.locator("#chat-input").click()
    if text:
        page.keyboard.type(text)
    page.keyboard.press("Enter")


def ask(page, question: str, timeout_s: float = 240) -> list[str]:
    """Send a question; return the texts the answer showed while it streamed."""
    before = page.locator('[data-step-type="assistant_message"]').count()
    type_and_send(page, question)
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        messages = page.locator('[data-step-type="assistant_message"]')
        if messages.count() > before:
            text = messages.last.inner_text()
            if not seen or text != seen[-1]:
                seen.append(text)
            if "Sources" in text and messages.last.locator(".element-link").count():
                return seen
        time.sleep(0.05)
    raise AssertionError(f"No complete answer within {timeout_s}s; saw {seen[-1:]}")


@pytest.fixture
def fresh_page(page):
    """A new tab: a new chat session, on Chainlit's welcome screen."""
    tab = page.context.browser.new_page(viewport={"width": 1400, "height": 900})
    tab.set_default_timeout(30_000)
    yield tab
    tab.close()


def test_the_chat_opens_branded_with_what_is_indexed_and_starters(fresh_page, server):
    tab = fresh_page
    tab.goto(server.url)
    welcome = tab.locator("#welcome-screen")
    welcome.get_by_role("heading", name="FCC Rules Assistant").wait_for()
    assert tab.title() == "FCC Rules Assistant"
    logo = welcome.locator("img").first
    assert logo.get_attribute("src").endswith("/public/icon.png")
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0")
    for path, asset in (
        ("/logo?theme=dark", "logo_dark.png"),
        ("/logo?theme=light", "logo_light.png"),
        ("/favicon", "favicon.png"),
    ):
        assert httpx.get(f"{server.url}{path}").content == (PUBLIC / asset).read_bytes(), path

    # The welcome line: what is indexed and what answers.
    text = " ".join(welcome.inner_text().split())
    listed = httpx.get(f"{server.url}/api/documents").json()
    chunks = sum(d["chunks"] for d in listed)
    assert f"{len(listed)} documents indexed ({chunks:,} chunks)" in text, text
    # What it knows: the parts and their eCFR date, from the indexed documents' metadata.
    assert f"47 CFR Parts 80 and 97 (eCFR, {ECFR_DATE})" in text, text
    assert "model SmolLM2-135M-Instruct, adapter " in text, text

    # Starters: the corpus's own questions (data/corpus/ecfr/starters.json).
    starters = tab.locator("#starters button")
    starters.first.wait_for()
    labels = [starters.nth(i).inner_text().strip() for i in range(starters.count())]
    assert labels == [s["label"] for s in STARTERS], labels
    tab.screenshot(path=str(OUTPUT / "browser-welcome.png"))


@pytest.mark.parametrize("index", range(len(STARTERS)))
def test_each_starter_answers_from_its_section(fresh_page, server, index):
    tab = fresh_page
    tab.goto(server.url)
    starter = tab.locator("#starters button").nth(index)
    starter.wait_for()
    label = starter.inner_text().strip()
    section = label.split()[1]  # "§ 97.119 Station identification" -> "97.119"
    starter.click()
    answer = tab.locator('[data-step-type="assistant_message"]').last
    answer.locator(".element-link").first.wait_for(timeout=240_000)
    text = answer.inner_text()
    # The answer quotes the section asked about first ("§ 97.119(a): "...") and cites it.
    assert re.search(rf'§ {re.escape(section)}\b[^:\n]*: "', text), text
    assert "documents may not answer" not in text and "[1]" in text, text
    assert f"eCFR as of {ECFR_DATE}" in text and not any(n in text for n in SAMPLE_NAMES), text
    step = tab.locator('[data-step-type="retrieval"]').last
    step.wait_for()
    assert step.bounding_box()["y"] < answer.bounding_box()["y"], "retrieval shown below"
    assert tab.locator("#welcome-screen").count() == 0
    tab.screenshot(path=str(OUTPUT / f"browser-starter-{section}.png"))


def test_ask_stream_cite_and_rate(page, server):
    seen = ask(page, "When must an amateur station transmit its assigned call sign?")
    final = seen[-1]
    # Verified answers stream quote first: the rule verbatim with its pinpoint, then more.
    assert len(seen) >= 2, f"the answer did not stream: {seen}"
    assert re.search(r'§ \d+\.\d+[^:]*: "', seen[0]) or re.search(r'§ \d+\.\d+[^:]*: "', final)
    assert "[1]" in final
    assert "ecfr/part97/97.119.xml · § 97.119(" in final, final  # pinpoint citations
    assert not any(name in final for name in SAMPLE_NAMES), final  # never a restatement
    assert final.count(ECFR_DATE) == 1, final  # the eCFR date, once under the sources

    step = page.locator('[data-step-type="retrieval"]')
    assert step.count() >= 1

    link = last_answer(page).locator(".element-link", has_text="[1]").first
    link.click()
    side = page.locator("#side-view-content")
    side.wait_for()
    card = side.inner_text()
    assert "score:" in card.lower() and "hybrid" in card
    assert "ecfr/part97/97.119.xml" in card, card
    assert card.count(f"eCFR as of {ECFR_DATE}") == 1, card
    page.screenshot(path=str(OUTPUT / "browser-chat.png"))

    # 👎 with a correction, through Chainlit's own feedback UI.
    last_answer(page).locator(".negative-feedback-off").first.click()
    page.locator("textarea").last.fill(
        "Transmit the call sign at the end of each communication and every 10 minutes."
    )
    page.locator("#submit-feedback").click()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = httpx.get(f"{server.url}/api/feedback/stats").json()
        if stats["corrected"]:
            break
        time.sleep(0.3)
    assert stats["thumbs_down"] == 1 and stats["corrected"] == 1, stats
    exported = httpx.get(f"{server.url}/api/feedback/export").text
    assert "at the end of each communication and every 10 minutes" in exported
    assert "transmit its assigned call sign" in exported

    # A question about a whole section answers with its opening paragraphs, quoted in order.
    final = ask(page, "What does § 97.119 require?")[-1]
    assert final.startswith('§ 97.119(a): "Each amateur station'), final
    assert "ecfr/part97/97.119.xml · § 97.119(b)" in final and "§ 80." not in final, final


def test_upload_then_ask_about_it(page, server, tmp_path):
    note = tmp_path / "zebra_band_note.md"
    note.write_text(
        "# Zebra band note\n\n## § 99.7 Zebra band power.\n\n"
        "The maximum output power in the zebra band is 42 milliwatts.\n"
    )
    page.locator("#upload-button-input").set_input_files(str(note))
    page.locator("#chat-input").click()
    page.keyboard.press("Enter")
    page.get_by_text("Upload finished").wait_for(timeout=120_000)
    page.screenshot(path=str(OUTPUT / "browser-upload-progress.png"))
    assert "zebra_band_note.md" in {
        d["source"] for d in httpx.get(f"{server.url}/api/documents").json()
    }
    final = ask(page, "What is the maximum output power in the zebra band?")[-1]
    assert "zebra_band_note.md" in final
    page.screenshot(path=str(OUTPUT / "browser-upload-answer.png"))


def test_settings_switch_the_adapter(page, server):
    page.reload()
    page.locator("#chat-input").wait_for()
    page.locator("#chat-settings-open-modal").click()
    page.locator("#adapter").click()
    page.get_by_role("option", name="demo").click()
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Adapter: demo").wait_for(timeout=60_000)
    status = httpx.get(f"{server.url}/api/chat/qlora/status").json()
    assert status["adapter_path"].endswith("demo/final_model") and status["adapter"] == "demo"
