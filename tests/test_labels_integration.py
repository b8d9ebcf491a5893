"""Labels end to end: obligations.label, the CLI, and the middleware labelling AI media responses."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aiobligations import Obligations
from aiobligations.demo import build_app, wrap
from aiobligations.demo.models import ToyImageModel
from aiobligations.errors import LabelError
from aiobligations.keys import init_project
from aiobligations.labels.formats import png
from aiobligations.middleware import ObligationsMiddleware, Route, RoutePolicy


@pytest.fixture
def obligations(tmp_path: Path):
    hub = Obligations.from_file(init_project(tmp_path))
    yield hub
    hub.close()


def idat(data: bytes) -> bytes:
    """The concatenated image data of a PNG: what labelling must never touch."""
    out, pos = b"", 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            out += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return out


def test_label_then_inspect_finds_one_conforming_bound_and_trusted_label(obligations) -> None:
    original = ToyImageModel().generate("a lighthouse")

    labelled = obligations.label(original, "image/png", interaction_id="ia-7", explicit=False, watermark=False)
    report = obligations.labeller.inspect(labelled)

    assert idat(original) == idat(labelled)
    (found,) = report["gb45438"]
    assert ("1", "ia-7") == (found["fields"]["Label"], found["fields"]["ProduceID"])
    assert found["reserved_code1"].startswith("verified")
    assert "Trusted" == report["c2pa"]["validation_state"]
    assert 1 == len(png.read_labels(obligations.label(labelled, "image/png", interaction_id="ia-8",
                                                      explicit=False, watermark=False)))
    record = obligations.ledger.read(obligations.ledger.flush() - 2)
    assert ("label", "ia-7", "image/png") == (record["kind"], record["interaction_id"], record["format"])
    assert record["sha256_before"] != record["sha256_after"]


def test_a_relabelled_or_edited_file_no_longer_verifies(obligations) -> None:
    labelled = obligations.label(ToyImageModel().generate("x"), "image/png", interaction_id="ia-1")
    position = labelled.index(b"IDAT") + 10
    edited = labelled[:position] + bytes([labelled[position] ^ 1]) + labelled[position + 1 :]

    with pytest.raises(LabelError):
        obligations.labeller.inspect(edited)  # The IDAT CRC no longer matches: a malformed file.


def test_bad_input_is_refused_with_a_clear_error(obligations) -> None:
    with pytest.raises(LabelError, match="not a supported file"):
        obligations.label(b"hello", "text/plain")
    with pytest.raises(LabelError, match="not image/jpeg"):
        obligations.label(ToyImageModel().generate("x"), "image/jpeg")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiobligations.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_label_and_inspect_exit_statuses(tmp_path: Path) -> None:
    init_project(tmp_path)
    (tmp_path / "in.png").write_bytes(ToyImageModel().generate("cli"))
    (tmp_path / "junk.bin").write_bytes(b"\x00garbage" * 10)

    labelled = run_cli("label", "in.png", "out.png", cwd=tmp_path)
    found = run_cli("inspect", "out.png", cwd=tmp_path)
    none = run_cli("inspect", "in.png", cwd=tmp_path)
    junk = run_cli("inspect", "junk.bin", cwd=tmp_path)
    exists = run_cli("label", "in.png", "out.png", cwd=tmp_path)

    assert 0 == labelled.returncode, labelled.stderr
    assert 0 == found.returncode, found.stderr
    assert "Trusted" == json.loads(found.stdout)["c2pa"]["validation_state"]
    assert 1 == none.returncode
    assert (2, 1) == (junk.returncode, len(junk.stderr.strip().splitlines()))
    assert "not a supported file" in junk.stderr and "Traceback" not in junk.stderr
    assert 2 == exists.returncode and "already exists" in exists.stderr


def test_the_demo_images_route_returns_labelled_pngs(obligations) -> None:
    app = wrap(build_app(stream_delay=0), obligations)

    async def generate() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/v1/images/generations", json={"prompt": "a cat", "n": 2})

    response = asyncio.run(generate())

    assert 200 == response.status_code
    interaction_id = response.headers["ai-interaction-id"]
    for item in response.json()["data"]:
        report = obligations.labeller.inspect(base64.b64decode(item["b64_json"]))
        (found,) = report["gb45438"]
        assert interaction_id == found["fields"]["ProduceID"]
        assert "Trusted" == report["c2pa"]["validation_state"]
    records = [obligations.ledger.read(i) for i in range(obligations.ledger.flush())]
    assert 2 == sum(1 for r in records if r["kind"] == "label")
    (interaction,) = [r for r in records if r["kind"] == "interaction"]
    assert {"applied": 2, "error": None} == interaction["labels"]


def test_binary_media_responses_are_labelled(obligations) -> None:
    image = ToyImageModel().generate("binary")

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(image)).encode())]})
        await send({"type": "http.response.body", "body": image})

    obligations.label_settings = dataclasses.replace(obligations.label_settings, explicit=False, watermark=False)
    wrapped = ObligationsMiddleware(app, obligations=obligations,
                                    policy=RoutePolicy([Route("/draw", methods=frozenset({"GET"}))]))

    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t") as client:
            return await client.get("/draw")

    response = asyncio.run(fetch())

    assert str(len(response.content)) == response.headers["content-length"]
    assert 1 == len(png.read_labels(response.content))
    assert idat(image) == idat(response.content)


def test_a_file_labelled_by_another_producer_is_labelled_as_a_propagator(obligations) -> None:
    from aiobligations.labels import AIGCLabel

    theirs = AIGCLabel(content_producer="001191110102MACQD9K64010000", produce_id="their-42",
                       content_propagator="001191110102MACQD9K64010000", propagate_id="their-42")
    original = png.write_label(ToyImageModel().generate("a picture from another producer"), theirs.to_json())

    before = obligations.labeller.inspect(original)
    labelled = obligations.label(original, "image/png", interaction_id="ours-1", c2pa=False)

    assert "001191110102MACQD9K64010000" == before["gb45438"][0]["fields"]["ContentProducer"]
    (payload,) = png.read_labels(labelled)
    fields = AIGCLabel.parse(payload)
    assert ("001191110102MACQD9K64010000", "their-42") == (fields.content_producer, fields.produce_id)
    assert ("ours-1", obligations.labeller.propagator) == (fields.propagate_id, fields.content_propagator)
    assert fields.reserved_code2.startswith("v1.")
    record = obligations.ledger.read(obligations.ledger.flush() - 1)
    assert "propagator" == record["role"]


def test_the_profile_defaults_caption_watermark_label_and_sign(obligations) -> None:
    import io

    from PIL import Image

    original = ToyImageModel().generate("defaults", "512x512")

    labelled = obligations.label(original, "image/png", interaction_id="ia-d")
    report = obligations.labeller.inspect(labelled)
    stripped = io.BytesIO()
    Image.open(io.BytesIO(labelled)).convert("RGB").save(stripped, "JPEG", quality=75)
    after_reencode = obligations.labeller.inspect(stripped.getvalue())

    assert idat(original) != idat(labelled)  # The caption and the mark are in the pixels.
    assert "ia-d" == report["gb45438"][0]["fields"]["ProduceID"]
    assert report["watermark"]["present"] and report["watermark"]["id_matches"]
    assert "c2pa.watermarked.bound" in json.dumps(report["c2pa"])
    assert ([], None) == (after_reencode["gb45438"], after_reencode["c2pa"])
    assert after_reencode["watermark"]["present"] and after_reencode["labelled"]
    record = obligations.ledger.read(obligations.ledger.flush() - 1)
    assert ("caption", "AI生成") == (record["explicit"]["kind"], record["explicit"]["wording"])
    assert "payload" in record["watermark"]


def test_a_route_can_ask_for_the_explicit_text_label(obligations) -> None:
    policy = RoutePolicy([Route("/v1/chat/completions", text_label=True)])
    app = ObligationsMiddleware(build_app(stream_delay=0), obligations=obligations, policy=policy)

    async def chat() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/v1/chat/completions",
                                     json={"model": "toy-1", "messages": [{"role": "user", "content": "你好"}]})

    content = asyncio.run(chat()).json()["choices"][0]["message"]["content"]

    assert content.startswith("【本内容由人工智能生成】")


def test_inspect_checks_a_candidate_id_against_a_stripped_files_watermark(obligations) -> None:
    import io

    from PIL import Image

    labelled = obligations.label(ToyImageModel().generate("stripped", "512x512"), "image/png", interaction_id="cand-1")
    stripped = io.BytesIO()
    Image.open(io.BytesIO(labelled)).convert("RGB").save(stripped, "JPEG", quality=80)

    right = obligations.labeller.inspect(stripped.getvalue(), produce_id="cand-1")["watermark"]
    wrong = obligations.labeller.inspect(stripped.getvalue(), produce_id="cand-2")["watermark"]

    assert right["present"] and right["id_matches"]
    assert wrong["present"] and not wrong["id_matches"]


def test_the_signer_can_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    config = init_project(tmp_path)
    keys = tmp_path / "keys" / "c2pa"
    monkeypatch.setenv("AIOBLIGATIONS_C2PA_CHAIN", str(keys / "chain.pem"))
    monkeypatch.setenv("AIOBLIGATIONS_C2PA_KEY", str(keys / "signer.key"))
    text = config.read_text(encoding="utf-8").replace('c2pa_chain = "keys/c2pa/chain.pem"\n', "")
    config.write_text(text.replace('c2pa_key = "keys/c2pa/signer.key"\n', ""), encoding="utf-8")

    with Obligations.from_file(config) as hub:
        labelled = hub.label(ToyImageModel().generate("env"), "image/png", explicit=False, watermark=False)
        assert "Trusted" == hub.labeller.inspect(labelled)["c2pa"]["validation_state"]


def test_composite_content_is_declared_as_such(obligations) -> None:
    labelled = obligations.label(ToyImageModel().generate("edit"), "image/png", composite=True,
                                 explicit=False, watermark=False)

    types = {a.get("digitalSourceType", "") for a in obligations.labeller.inspect(labelled)["c2pa"]["actions"]}

    assert any(t.endswith("compositeWithTrainedAlgorithmicMedia") for t in types)


@pytest.mark.parametrize("name", ["truncated.png", "entities.png", "empty.png"])
def test_cli_inspect_of_hostile_files_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    from aiobligations.labels.formats.png import _chunk

    good = ToyImageModel().generate("hostile")
    xmp = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>'
    hostile = {
        "truncated.png": good[: len(good) // 2],
        "entities.png": good[:33] + _chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp) + good[33:],
        "empty.png": b"",
    }[name]
    (tmp_path / name).write_bytes(hostile)

    result = run_cli("inspect", name, cwd=tmp_path)

    assert 2 == result.returncode, result.stdout
    assert 1 == len(result.stderr.strip().splitlines()) and "Traceback" not in result.stderr
