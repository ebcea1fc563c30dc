"""The OpenAPI schema tells the truth: errors are 400 ErrorResponse (never FastAPI's 422), hand-parsed bodies
and the /v2 answers are declared, /metrics is text, and every reference resolves."""

from __future__ import annotations

import json

import httpx


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_openapi_declares_what_the_server_answers(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in components for ref in _refs(spec))
    assert "422" not in json.dumps({p: {m: sorted(o["responses"]) for m, o in ops.items()}
                                    for p, ops in spec["paths"].items()})
    classify = spec["paths"]["/v1/models/{name}/classify"]["post"]
    assert classify["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"].endswith("/V2InferenceRequest")
    assert "application/octet-stream" in body
    assert infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/V2InferenceResponse")
    assert spec["paths"]["/v2/models/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "$ref"].endswith("/V2ModelMetadata")
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert "V2InferenceRequest" in components and components["V2InferenceRequest"]["properties"]["inputs"]


def test_a_parameter_error_is_a_400_error_response(client: httpx.Client) -> None:
    response = client.post("/v1/models/paca-digits/classify", params={"k": "many"}, content=b"x",
                           headers={"content-type": "image/png"})
    assert response.status_code == 400 and set(response.json()) == {"error", "request_id"}
    assert "k" in response.json()["error"]
