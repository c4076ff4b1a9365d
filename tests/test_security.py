"""Security and reliability, on the real stack: `python -m app` in a subprocess (its own
store and data dir, the sample corpus ingested, API_KEY, CORS_ORIGINS and MAX_UPLOAD_MB set),
driven over HTTP with httpx and, for the chat login, in a real headless Chromium. The pieces
that need no server (the host check, the login check, paths, uploads, the DOCX and XML
guards) are tested directly, on real files.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.load import ROOT, SAMPLE_CORPUS, ServerProcess

API_KEY = "test-key-0123456789"
ALLOWED_ORIGIN = "https://allowed.example"
EVIL_ORIGIN = "https://evil.example"
CHROMIUM = Path("/usr/bin/chromium")
QUEUE_LIMIT = 2  # MAX_PENDING_ANSWERS of the server below: the chat test fills the queue

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# The host check (app.main refuses to listen beyond loopback unguarded) ------------------------


def test_host_check_allows_loopback_and_guarded_servers_only():
    from app import UnsafeHostError, check_host, is_loopback
    from core.settings import Settings

    assert Settings(_env_file=None).host == "127.0.0.1"  # the default is loopback
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
        assert check_host(Settings(_env_file=None, host=host)) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        assert not is_loopback(host), host
        with pytest.raises(UnsafeHostError, match="set API_KEY.*ALLOW_OPEN_HOST=true"):
            check_host(Settings(_env_file=None, host=host))
        assert check_host(Settings(_env_file=None, host=host, api_key="k")) is None
        warning = check_host(Settings(_env_file=None, host=host, allow_open_host=True))
        assert warning and "ALLOW_OPEN_HOST=true" in warning and host in warning


def test_the_server_refuses_to_start_open_beyond_loopback(tmp_path):
    env = {
        **os.environ,
        "HOST": "0.0.0.0",
        "PORT": "1",  # never bound: it must stop before
        "DATA_DIR": str(tmp_path / "data"),
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "HF_HUB_OFFLINE": "1",
    }
    for name in ("API_KEY", "ALLOW_OPEN_HOST", "QDRANT_URL", "QDRANT_HOST"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "HOST=0.0.0.0" in output and "Refusing to start: set API_KEY" in output
    assert "ALLOW_OPEN_HOST=true" in output and "Traceback" not in output
    assert not (tmp_path / "qdrant").exists()  # stopped before opening the store


# The chat login (the check itself; the browser test below drives the real page) ---------------


def test_chat_login_checks_the_key_and_chat_users():
    from core.settings import Settings
    from ui.auth import check_login, derive_jwt_secret

    open_server = Settings(_env_file=None)
    assert check_login("anyone", "anything", open_server) is None  # no key: no login at all
    s = Settings(_env_file=None, api_key="k3y", chat_users="ann:pw1, bob:p:w2,broken,:x")
    assert s.chat_user_passwords == {"ann": "pw1", "bob": "p:w2"}
    assert check_login("", "k3y", s) == "user"
    assert check_login("ann", "k3y", s) == "ann"  # the key works for every name
    assert check_login("ann", "pw1", s) == "ann"
    assert check_login("bob", "p:w2", s) == "bob"
    for name, password in (("ann", "pw2"), ("bob", "pw1"), ("eve", "pw1"), ("ann", ""), ("", "")):
        assert check_login(name, password, s) is None, (name, password)
    assert derive_jwt_secret("k3y") == derive_jwt_secret("k3y") != derive_jwt_secret("k3y2")
    assert "k3y" not in derive_jwt_secret("k3y")


# Paths ---------------------------------------------------------------------------------------


def test_outputs_only_in_checkpoints_adapters_also_in_shipped_adapters(tmp_path):
    from core.settings import Settings
    from services.paths import PathNotAllowedError, resolve_inside, resolve_readable

    s = Settings(_env_file=None, data_dir=tmp_path)
    shipped = tmp_path / "adapters" / "demo"
    assert resolve_readable(shipped, settings=s) == shipped.resolve()
    assert resolve_readable("run/final_model", settings=s) == (
        tmp_path / "checkpoints" / "run" / "final_model"
    )
    assert resolve_inside("run", settings=s) == tmp_path / "checkpoints" / "run"
    for bad in (tmp_path / "corpus", tmp_path / "corpus" / "x", tmp_path / "uploads", shipped):
        with pytest.raises(PathNotAllowedError):
            resolve_inside(bad, settings=s)
    for bad in (tmp_path / "corpus", tmp_path / "uploads", "../corpus", tmp_path):
        with pytest.raises(PathNotAllowedError):
            resolve_readable(bad, settings=s)


# Uploads: never replace another document -------------------------------------------------------


def test_an_upload_never_replaces_another_document(tmp_path):
    from core.settings import Settings
    from services.uploads import UploadTooLargeError, save_upload

    s = Settings(_env_file=None, data_dir=tmp_path, max_upload_mb=1)
    first = save_upload("notes.md", b"# A\n", s)
    assert first.path == tmp_path / "uploads" / "notes.md" and not first.renamed
    again = save_upload("notes.md", b"# A\n", s)
    assert again.unchanged and again.path == first.path and again.note() is None
    other = save_upload("notes.md", io.BytesIO(b"# B\n"), s)  # a file object, as the API sends
    assert other.path.name == "notes (2).md" and other.renamed and not other.unchanged
    assert "stored as 'notes (2).md'" in other.note()
    assert first.path.read_bytes() == b"# A\n" and other.path.read_bytes() == b"# B\n"
    third = save_upload("notes.md", b"# B\n", s)  # the same bytes as the renamed one
    assert third.unchanged and third.path == other.path
    with pytest.raises(UploadTooLargeError):
        save_upload("big.txt", io.BytesIO(b"a" * (1024 * 1024 + 1)), s)
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["notes (2).md", "notes.md"]


# DOCX zip bombs and XML entities ---------------------------------------------------------------


def _zip_of_zeros(path: Path, megabytes: int) -> bytes:
    """A DOCX-shaped zip whose document.xml inflates to `megabytes` MB of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(megabytes):
                member.write(block)
    return path.read_bytes()


def test_docx_zip_bombs_are_skipped_with_a_reason(tmp_path):
    from ingest.documents import SkipFile
    from ingest.loaders import DOCX_MAX_UNCOMPRESSED, load_file

    ratio_bomb = _zip_of_zeros(tmp_path / "ratio.docx", 40)
    assert len(ratio_bomb) < 200 * 1024  # 40 MB from under 200 kB
    with pytest.raises(SkipFile, match=r"compresses \d+:1 .*zip bomb"):
        load_file(tmp_path / "ratio.docx", ratio_bomb)
    size_bomb = _zip_of_zeros(tmp_path / "size.docx", DOCX_MAX_UNCOMPRESSED // (1024 * 1024) + 1)
    with pytest.raises(SkipFile, match=r"inflates to \d+ MB .*zip bomb"):
        load_file(tmp_path / "size.docx", size_bomb)
    # Real documents pass the guard.
    for docx in sorted(SAMPLE_CORPUS.glob("*.docx")):
        assert load_file(docx, docx.read_bytes()).segments


def test_docx_bomb_is_reported_by_ingest(tmp_path):
    from ingest.pipeline import ingest_paths

    folder = tmp_path / "docs"
    folder.mkdir()
    _zip_of_zeros(folder / "bomb.docx", 40)
    report = ingest_paths([folder], collection="bomb_test", progress=False)
    assert report.files_skipped == 1 and "zip bomb" in report.skipped[0]["reason"]


LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<DIV8 N="1.1" TYPE="SECTION"><HEAD>Section 1.1 Laughs.</HEAD><P>Start &lol9; end.</P></DIV8>
"""


def test_xml_entities_are_never_expanded(tmp_path):
    from ingest.documents import SkipFile
    from ingest.loaders import load_file

    started = time.perf_counter()
    try:
        loaded = load_file(tmp_path / "laughs.xml", LAUGHS)
        text = "\n".join(s.text for s in loaded.segments)
        assert "lol" not in text.replace("Laughs", "") and len(text) < 200, text[:200]
    except SkipFile:
        pass  # refused outright is as good as not expanded
    assert time.perf_counter() - started < 5

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    uri = secret.as_uri()
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "{uri}">]>'
        '<DIV8 N="1.2" TYPE="SECTION"><HEAD>Section 1.2 X.</HEAD><P>A &xxe; B</P></DIV8>'
    ).encode()
    try:
        loaded = load_file(tmp_path / "xxe.xml", xxe)
        assert "TOP-SECRET" not in "\n".join(s.text for s in loaded.segments)
    except SkipFile:
        pass
    html = (
        f'<!DOCTYPE html [<!ENTITY xxe SYSTEM "{uri}">]><html><body><h1>T</h1>'
        "<p>A &xxe; B</p></body></html>"
    ).encode()
    assert "TOP-SECRET" not in load_file(tmp_path / "xxe.html", html).segments[0].text

    # 1000 levels: past libxml2's default depth limit (256), within huge_tree's (2048).
    deep = b'<DIV8 N="1.3" TYPE="SECTION"><HEAD>Deep</HEAD>' + b"<P>" * 1000 + b"x"
    deep += b"</P>" * 1000 + b"</DIV8>"
    with pytest.raises(SkipFile, match="not well-formed XML.*[Dd]epth"):
        load_file(tmp_path / "deep.xml", deep)


# The real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("security-server")
    env = {
        "API_KEY": API_KEY,
        "CORS_ORIGINS": f"{ALLOWED_ORIGIN}, http://other.example",
        "MAX_UPLOAD_MB": "1",
        "MAX_NEW_TOKENS": "16",
        "MAX_PENDING_ANSWERS": str(QUEUE_LIMIT),
    }
    with ServerProcess(state, env=env) as running:
        yield running
        print(running.log_tail())


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=300) as client:
        yield client


def test_the_api_needs_the_key(server):
    assert httpx.get(f"{server.url}/api/health").status_code == 200
    for path in ("/api/status", "/api/documents", "/v1/models", "/api/chat/qlora/status"):
        assert httpx.get(f"{server.url}{path}").status_code == 401, path
        wrong = httpx.get(f"{server.url}{path}", headers={"X-API-Key": "wrong"})
        assert wrong.status_code == 401, path
    body = {"messages": [{"role": "user", "content": "q"}]}
    assert httpx.post(f"{server.url}/api/chat", json=body).status_code == 401
    response = httpx.get(f"{server.url}/api/status", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    assert httpx.get(f"{server.url}/auth/config").json()["requireLogin"] is True


def test_cors_allows_only_the_configured_origins(server):
    url = f"{server.url}/api/health"
    simple = httpx.get(url, headers={"Origin": EVIL_ORIGIN})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    preflight = {"Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST"}
    refused = httpx.options(f"{server.url}/api/chat", headers=preflight)
    assert refused.headers.get("access-control-allow-origin") != EVIL_ORIGIN
    assert refused.status_code == 400

    allowed = httpx.get(url, headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    preflight["Origin"] = ALLOWED_ORIGIN
    ok = httpx.options(f"{server.url}/api/chat", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN

    # The chat's Socket.IO: same origin and the configured ones, nothing else.
    handshake = f"{server.url}/ws/socket.io/?EIO=4&transport=polling"
    assert httpx.get(handshake, headers={"Origin": EVIL_ORIGIN}).status_code == 400
    for origin in (server.url, ALLOWED_ORIGIN):
        assert httpx.get(handshake, headers={"Origin": origin}).status_code == 200, origin


def test_training_output_and_adapter_paths(api, server):
    data = server.state_dir / "data"
    conversations = [{"prompt": "q", "response": "a"}]
    for output in (data / "corpus", data / "uploads" / "x", data / "adapters" / "mine", "../"):
        body = {"conversations": conversations, "output_dir": str(output)}
        response = api.post("/api/chat/qlora/train", json=body)
        assert response.status_code == 400, (output, response.text)
        assert "outside the allowed folders" in response.json()["detail"]
    assert not (data / "adapters").exists() and not (data / "corpus").exists()


def test_a_shipped_adapter_can_be_loaded(api, server):
    from tests.test_browser import make_adapter

    folder = server.state_dir / "data" / "adapters" / "shipped-demo"
    make_adapter(folder)
    response = api.post("/api/chat/qlora/load_trained", params={"adapter_path": str(folder)})
    assert response.status_code == 200, response.text
    assert response.json()["adapter_path"] == str(folder.resolve())
    api.post("/api/chat/qlora/load", json={"model_name": ""})  # back to the bare base


def _upload(api, name: str, content: bytes) -> httpx.Response:
    return api.post("/api/ingest", files=[("files", (name, content, "text/plain"))])


def test_documents_are_deleted_by_root_and_never_overwritten(api, server):
    uploads = server.state_dir / "data" / "uploads"
    first = _upload(api, "zebra.md", b"# Zebra\n\nThe zebra band limit is 42 mW.\n")
    assert first.status_code == 200 and first.json()["stored"] == ["zebra.md"], first.text
    same = _upload(api, "zebra.md", b"# Zebra\n\nThe zebra band limit is 42 mW.\n").json()
    assert same["files_unchanged"] == 1 and same["renamed"] == []
    other = _upload(api, "zebra.md", b"# Zebra\n\nSomeone else's zebra note: 7 mW.\n").json()
    assert other["stored"] == ["zebra (2).md"] and other["files_added"] == 1, other
    assert other["renamed"][0]["uploaded"] == "zebra.md"
    assert "zebra (2).md" in other["renamed"][0]["note"]
    assert (uploads / "zebra.md").read_bytes().endswith(b"42 mW.\n")  # the first one is intact

    # A corpus name uploaded again: indexed under two roots.
    corpus_file = SAMPLE_CORPUS / "part15_definitions.txt"
    clash = _upload(api, corpus_file.name, b"An uploaded text that shares a corpus file's name.\n")
    assert clash.status_code == 200 and clash.json()["files_added"] == 1
    ambiguous = api.delete(f"/api/documents/{corpus_file.name}")
    assert ambiguous.status_code == 409, ambiguous.text
    roots = ambiguous.json()["roots"]
    assert sorted(roots) == sorted([uploads.resolve().as_posix(), SAMPLE_CORPUS.as_posix()])
    removed = api.delete(f"/api/documents/{corpus_file.name}", params={"root": "uploads"})
    assert removed.status_code == 200, removed.text
    assert removed.json()["file_removed"] and removed.json()["chunks_removed"] >= 1
    assert not (uploads / corpus_file.name).exists() and corpus_file.is_file()

    # A corpus document: out of the index, the file stays (and the response says so).
    gone = api.delete(f"/api/documents/{corpus_file.name}").json()
    assert gone["root"] == SAMPLE_CORPUS.as_posix() and not gone["file_removed"]
    assert "stays on disk" in gone["note"] and "next ingest" in gone["note"]
    assert corpus_file.is_file()
    assert api.delete(f"/api/documents/{corpus_file.name}").status_code == 404

    # An upload: out of the index and off the disk; the other one stays.
    response = api.delete("/api/documents/zebra (2).md")
    assert response.status_code == 200 and response.json()["file_removed"]
    assert not (uploads / "zebra (2).md").exists() and (uploads / "zebra.md").exists()
    missing = api.delete("/api/documents/zebra.md", params={"root": "corpus"})
    assert missing.status_code == 404
    listed = {d["source"] for d in api.get("/api/documents").json()}
    assert "zebra.md" in listed and "zebra (2).md" not in listed
    assert corpus_file.name not in listed


def test_an_oversize_chunked_upload_is_refused_as_it_arrives(api, server):
    uploads = server.state_dir / "data" / "uploads"
    before = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []
    boundary = "sizelimitboundary"
    total = 64 * 1024 * 1024  # 64 MB offered; the limit is MAX_UPLOAD_MB=1 per file
    sent = [0]

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            'filename="huge.txt"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        block = b"a" * 65536
        while sent[0] < total:
            sent[0] += len(block)
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = api.post("/api/ingest", content=body(), headers=headers)
    assert response.status_code == 413, response.text
    assert "MAX_UPLOAD_MB=1" in response.json()["detail"]
    assert sent[0] < total, "the server read the whole body before refusing it"
    after = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []
    assert after == before and "huge.txt" not in after

    # Many files, each under the limit, that add up past it: refused too.
    def many():
        for index in range(30):
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="part{index}.txt"\r\nContent-Type: text/plain\r\n\r\n'
            ).encode()
            yield b"b" * (900 * 1024) + b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    response = api.post("/api/ingest", content=many(), headers=headers)
    assert response.status_code == 413, response.text
    after = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []
    assert after == before


def test_a_failed_load_keeps_the_model_that_serves(api, server):
    loaded = api.post("/api/chat/qlora/load", json={"model_name": ""})
    assert loaded.status_code == 200, loaded.text
    before = api.get("/api/chat/qlora/status").json()
    assert before["loaded"] and before["model_name"] == "SmolLM2-135M-Instruct"

    response = api.post(
        "/api/chat/qlora/load", json={"model_name": "nonexistent-org/nonexistent-model"}
    )
    assert response.status_code == 400, response.text
    assert "nonexistent-org/nonexistent-model" in response.json()["detail"]
    broken = server.state_dir / "data" / "checkpoints" / "broken-model"
    broken.mkdir(parents=True)
    for config in ('{"model_type": "llama", broken', '{"model_type": "no-such-architecture"}'):
        (broken / "config.json").write_text(config)
        response = api.post("/api/chat/qlora/load", json={"model_name": str(broken)})
        assert 400 <= response.status_code < 500, response.text
        assert "broken-model" in response.json()["detail"]

    after = api.get("/api/chat/qlora/status").json()
    assert after["loaded"] is True
    assert (after["model_name"], after["device"]) == (before["model_name"], before["device"])
    body = {"messages": [{"role": "user", "content": "What is an intentional radiator?"}]}
    answer = api.post("/api/chat", json={**body, "max_tokens": 16})
    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"].strip() and answer.json()["sources"]


# The chat login in a real browser ---------------------------------------------------------------


@contextmanager
def queue_kept_full(server, timeout_s: float = 120):
    """QUEUE_LIMIT API clients asking back to back, so every answer slot stays taken (but
    for the milliseconds between one answer and the next request) until the block ends;
    then nothing is pending."""
    stop = threading.Event()
    headers = {"X-API-Key": API_KEY}
    body = {"messages": [{"role": "user", "content": "What is a Part 15 device?"}], "stream": True}

    def keep_asking() -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=300) as client:
            while not stop.is_set():
                with client.stream("POST", "/api/chat", json=body) as response:
                    for _ in response.iter_lines():
                        pass

    def pending() -> int:
        status = httpx.get(f"{server.url}/api/status", headers=headers, timeout=30)
        return status.json()["answers"]["pending"]

    workers = [threading.Thread(target=keep_asking, daemon=True) for _ in range(QUEUE_LIMIT)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout_s
    while pending() < QUEUE_LIMIT and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=timeout_s)
        while pending() and time.monotonic() < deadline + timeout_s:
            time.sleep(0.2)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (make browser)")
def test_the_chat_asks_for_the_key(server):
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM_ARGS, OUTPUT, type_and_send

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(server.url)
            page.locator("#password").wait_for()  # a login page, not the chat
            assert page.locator("#chat-input").count() == 0
            page.screenshot(path=str(OUTPUT / "browser-login.png"))

            page.locator("#email").fill("tester")
            page.locator("#password").fill("not-the-key")
            page.locator('button[type="submit"]').click()
            page.get_by_text("Unable to sign in").wait_for(timeout=15_000)
            assert page.locator("#chat-input").count() == 0
            page.screenshot(path=str(OUTPUT / "browser-login-refused.png"))

            page.locator("#password").fill(API_KEY)
            page.locator('button[type="submit"]').click()
            page.locator("#chat-input").wait_for(timeout=60_000)
            # The chat settings arrive over the session's socket once the chat has started:
            # a question typed before that races the socket's (authenticated) connection.
            page.locator("#chat-settings-open-modal").wait_for(timeout=60_000)
            # A full answer queue: the chat says to retry (it used to be Chainlit's generic
            # error). API clients keep every slot taken while the question is asked.
            with queue_kept_full(server):
                type_and_send(page, "What is an unintentional radiator?")
                busy = page.locator('[data-step-type="assistant_message"]').last
                busy.get_by_text("The assistant is busy").wait_for(timeout=60_000)
            assert "Retry in about" in busy.inner_text()
            # Refused before retrieval: no retrieval step is left hanging above the reply.
            assert page.locator('[data-step-type="retrieval"]').count() == 0
            page.screenshot(path=str(OUTPUT / "browser-busy.png"))

            # The logged-in chat works end to end (its socket is authenticated): an answer.
            question = "What is an intentional radiator?"
            type_and_send(page, question)
            page.get_by_text(question).first.wait_for(timeout=30_000)  # the message was sent
            answer = page.locator('[data-step-type="assistant_message"]').last
            answer.wait_for(timeout=240_000)
            deadline = time.monotonic() + 240
            while not answer.inner_text().strip() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert answer.inner_text().strip()
            page.screenshot(path=str(OUTPUT / "browser-login-chat.png"))
        finally:
            page.screenshot(path=str(OUTPUT / "browser-login-last.png"))
            browser.close()
