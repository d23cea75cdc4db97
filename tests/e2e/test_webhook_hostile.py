"""Hostile bodies sent to the real webhook over HTTPS: a review with a readable uid is an
AdmissionReview denial (``allowed: false``, code 400, the problem named, the uid echoed), a
body that is not a review (or too deep even to parse, or too big) is an HTTP 400 with the same
denial and no uid, never a 500 or a traceback (issue 11)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loom.k8s.values import settings_from
from loom.k8s.webhook import MAX_BODY, NamespaceLabelCache
from tests.e2e.test_webhook import admission_review, client_context, start_in_process

POD = {
    "metadata": {"name": "p", "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
    "spec": {"containers": [{"name": "app", "image": "busybox"}]},
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from tests.e2e.test_webhook import make_ca_and_cert

    return make_ca_and_cert(tmp_path_factory.mktemp("certs"), "hostile")


async def _post(certs: tuple[Path, Path, Path], bodies: list[bytes]) -> list[tuple[int, Any]]:
    runner, url = await start_in_process(settings_from({}), NamespaceLabelCache(), certs)
    out = []
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(certs[0]))
        ) as session:
            for body in bodies:
                async with session.post(f"{url}/mutate", data=io.BytesIO(body)) as resp:
                    out.append((resp.status, await resp.json()))
    finally:
        await runner.cleanup()
    return out


async def test_malformed_reviews_are_denials_naming_the_problem_with_the_uid(
    certs: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    surrogate = admission_review(POD, "default")
    surrogate["request"]["object"]["metadata"]["name"] = "\ud800"
    deep = admission_review(POD, "default")
    deep["request"]["object"]["spec"]["containers"][0]["env"] = "@"
    deep_body = json.dumps(deep).encode().replace(b'"@"', b"[" * 200 + b"]" * 200)
    wrong = admission_review(POD, "default")
    wrong["request"]["object"] = "a pod"
    bodies = [json.dumps(surrogate).encode(), deep_body, json.dumps(wrong).encode()]
    with caplog.at_level(logging.INFO):
        answers = await _post(certs, bodies)
    assert [status for status, _ in answers] == [200, 200, 200]
    messages = []
    for (_, doc), body in zip(answers, bodies, strict=True):
        response = doc["response"]
        assert response["allowed"] is False and response["status"]["code"] == 400
        assert response["uid"] == json.loads(body)["request"]["uid"]
        messages.append(response["status"]["message"])
    assert messages[0] == (
        "request.object.metadata.name: contains a lone UTF-16 surrogate, which is not text"
    )
    assert messages[1].startswith("request.object.spec.containers[0].env")
    assert messages[1].endswith("nested deeper than 64 levels")
    assert messages[2] == "request.object: missing or not an object"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_bodies_that_are_not_reviews_are_http_400_and_huge_ones_too(
    certs: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    bodies = [
        b"not json", b"[]", b'{"kind": "AdmissionReview"}', b"[" * 200_000 + b"]" * 200_000,
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {"uid": None}}).encode(),
        b'{"x": "' + b"a" * (MAX_BODY + 1) + b'"}',
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        answers = await _post(certs, bodies)
    assert [status for status, _ in answers] == [400] * len(bodies)
    messages = []
    for _, doc in answers:
        assert doc["kind"] == "AdmissionReview"
        assert doc["response"]["allowed"] is False and doc["response"]["uid"] == ""
        messages.append(doc["response"]["status"]["message"])
    assert messages[4] == "request.uid: missing or not a string"
    assert messages[5] == f"body: larger than {MAX_BODY} bytes"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
