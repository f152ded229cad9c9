"""The OpenAPI document (`/openapi.json`): valid OpenAPI 3.0, and true to the server.

Validity is checked with openapi-spec-validator when it is installed, and structurally
without it (the two mistakes it once caught: a `description` in a media type object, path
parameters declared for paths that lack them). Truth is checked by sending the in-process
app a request for every documented operation and every error the test can provoke, and
holding each answer to the document: its status is listed for the operation, its content
type is, its JSON body fits the documented schema and the documented headers come with it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
from starlette.routing import Route

from modelport.base.app import create_app
from modelport.base.config import ServerConfig
from modelport.base.errors import STATUS_CODES
from modelport.base.openapi import document
from tests.test_dataplane import AsyncEcho, SlowDoubler, client_for, make_plane, v2_body

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# The fields of a 3.0 Media Type Object (and `x-` extensions): no `description`.
MEDIA_TYPE_FIELDS = {"schema", "example", "examples", "encoding"}


def documents() -> list[dict[str, Any]]:
    return [
        document(ServerConfig(model_name="m", model_dir="/tmp")),
        document(ServerConfig(model_name="m", model_dir="/tmp", enable_model_repository=False)),
    ]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """`node` with every local `$ref` replaced by what it points at (recursively)."""
    if isinstance(node, list):
        return [resolve(doc, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return resolve(doc, target)
    return {key: resolve(doc, value) for key, value in node.items()}


def test_document_is_valid_openapi_3_0():
    import openapi_spec_validator as validator  # the test extra's

    for doc in documents():
        assert doc["openapi"] == "3.0.3"
        errors = list(validator.OpenAPIV30SpecValidator(doc).iter_errors())
        assert not errors, [error.message for error in errors]


def test_document_structure_without_a_validator():
    for doc in documents():
        seen: dict[int, str] = {}
        operation_ids: list[str] = []
        for path, method, operation in operations(doc):
            where = f"{method.upper()} {path}"
            if "operationId" in operation:
                operation_ids.append(operation["operationId"])
            # No two paths share an operation object (a loop over one would change both).
            assert id(operation) not in seen, (where, seen.get(id(operation)))
            seen[id(operation)] = where
            parameters = resolve(doc, doc["paths"][path].get("parameters", []))
            parameters += resolve(doc, operation.get("parameters", []))
            declared = sorted(p["name"] for p in parameters if p["in"] == "path")
            assert declared == sorted(re.findall(r"\{([^}]+)\}", path)), where
            assert all(p["required"] for p in parameters if p["in"] == "path"), where
            bodies = [operation.get("requestBody", {})]
            bodies += resolve(doc, list(operation["responses"].values()))
            for part in bodies:
                for media_type, media in part.get("content", {}).items():
                    extra = {key for key in media if not key.startswith("x-")}
                    assert extra <= MEDIA_TYPE_FIELDS, (where, media_type, extra)
            for code, response in resolve(doc, operation["responses"]).items():
                assert re.fullmatch(r"[1-5]\d\d|default", code), (where, code)
                assert response["description"], (where, code)
        assert len(operation_ids) == len(set(operation_ids))
        resolve(doc, doc)  # every $ref points somewhere
    # Every status the error table gives is an answer the document knows.
    documented = set(documents()[0]["components"]["responses"])
    assert {str(status) for status, _ in STATUS_CODES.values()} <= documented


async def test_every_route_of_the_app_is_documented(tmp_path):
    plane = await make_plane(tmp_path)
    app = create_app(plane.config, plane.repository, plane)
    doc = document(plane.config)
    served = {
        (route.path, method.lower())
        for route in app.routes_app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    served |= {
        (path, "post")
        for path in (
            "/v2/models/{name}/infer",
            "/v2/models/{name}/versions/{version}/infer",
            "/v1/models/{name}:predict",
            "/v1/models/{name}:explain",
        )
    }
    documented = {(path, method) for path, method, _ in operations(doc)}
    assert served == documented


class Checker:
    """Holds answers to the document and remembers which operations were exercised."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.exercised: set[tuple[str, str]] = set()
        self.templates = [
            (re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/:]+", re.escape(path))), path)
            for path in doc["paths"]
        ]

    def check(self, response: httpx.Response, status: int | None = None) -> httpx.Response:
        request = response.request
        method = request.method.lower()
        where = f"{request.method} {request.url.path} -> {response.status_code}"
        if status is not None:
            assert response.status_code == status, (where, response.text)
        paths = [path for regex, path in self.templates if regex.fullmatch(request.url.path)]
        assert len(paths) == 1, (where, paths)
        operation = self.doc["paths"][paths[0]][method]
        self.exercised.add((paths[0], method))
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, f"{where}: status not documented"
        documented = resolve(self.doc, documented)
        media_type = response.headers["content-type"].split(";")[0].strip()
        assert media_type in documented["content"], (where, media_type)
        if media_type == "application/json":
            schema = documented["content"][media_type]["schema"]
            jsonschema.validate(response.json(), schema)
        if media_type == "application/octet-stream":
            for name in documented.get("headers", {}):
                assert name.lower() in response.headers, (where, name)
        return response


async def test_answers_are_the_documented_ones(tmp_path):
    plane = await make_plane(tmp_path / "doubler")
    checker = Checker(document(plane.config))
    check = checker.check
    async with client_for(plane) as client:
        for path in ("/", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"):
            check(await client.get(path), 200)
        for path in ("/v2/models", "/v1/models", "/v1/models/m", "/openapi.json", "/docs"):
            check(await client.get(path), 200)
        for prefix in ("/v2/models/m", "/v2/models/m/versions/1"):
            known = prefix == "/v2/models/m"  # the model has no version "1"
            check(await client.get(prefix), 200 if known else 404)
            check(await client.get(prefix + "/ready"), 200 if known else 404)
            check(
                await client.post(prefix + "/infer", json=v2_body([[1, 2]])), 200 if known else 404
            )

        # Binary outputs: application/octet-stream with Inference-Header-Content-Length.
        binary = check(
            await client.post(
                "/v2/models/m/infer", json=v2_body([[1, 2]], binary_data_output=True)
            ),
            200,
        )
        assert binary.headers["content-type"] == "application/octet-stream"
        length = int(binary.headers["inference-header-content-length"])
        assert len(binary.content) > length

        check(await client.post("/v2/models/m/infer", content=b"{not json"), 400)
        check(await client.post("/v2/models/nope/infer", json=v2_body([[1, 2]])), 404)
        check(await client.post("/v2/models/m/infer", json=v2_body([[1, 2]], fail="model")), 500)
        check(await client.get("/v2/models/nope"), 404)
        check(await client.get("/v2/models/nope/ready"), 404)
        check(await client.get("/v1/models/nope"), 404)
        check(await client.post("/v1/models/m:predict", json={"instances": [[1, 2]]}), 200)
        check(await client.post("/v1/models/m:predict", json={"instances": "x"}), 400)
        check(await client.post("/v1/models/nope:predict", json={"instances": [[1, 2]]}), 404)
        check(await client.post("/v1/models/m:explain", json={"instances": [[1, 2]]}), 501)

        # The repository: the index by GET and POST, unload and load answer {name, load}.
        check(await client.get("/v2/repository/index"), 200)
        check(await client.post("/v2/repository/index"), 200)
        unloaded = check(await client.post("/v2/repository/models/m/unload"), 200)
        assert unloaded.json() == {"name": "m", "unload": True}
        for path in ("/v2/models/m/ready", "/v2/models/m/versions/1/ready"):
            check(await client.get(path), 404)
        assert (await client.get("/v2/models/m/ready")).json() == {"name": "m", "ready": False}
        check(await client.get("/v2/models/m"), 404)
        check(await client.get("/v1/models/m"), 404)
        check(await client.post("/v2/repository/models/nope/unload"), 404)
        check(await client.post("/v2/repository/models/nope/load"), 404)
        check(await client.post("/v2/repository/models/bad!name/load"), 400)
        loaded = check(await client.post("/v2/repository/models/m/load"), 200)
        assert loaded.json() == {"name": "m", "load": True}
        check(await client.get("/v2/models/m/ready"), 200)

        # Not ready: the server's readiness and the model's are 503s with their own bodies.
        plane.draining = True
        assert check(await client.get("/v2/health/ready"), 503).json() == {"ready": False}
        plane.draining = False

    small = await make_plane(tmp_path / "small", max_request_size=64)
    async with client_for(small) as client:
        check(await client.post("/v2/models/m/infer", json=v2_body([[1, 2]] * 20)), 413)
        check(await client.post("/v1/models/m:predict", json={"instances": [[1, 2]] * 20}), 413)

    slow = await make_plane(tmp_path / "slow", SlowDoubler, request_timeout=0.001)
    async with client_for(slow) as client:
        check(await client.post("/v2/models/m/infer", json=v2_body([[1, 2]])), 504)
        check(await client.post("/v1/models/m:predict", json={"instances": [[1, 2]]}), 504)

    echo = await make_plane(tmp_path / "echo", AsyncEcho)
    try:
        AsyncEcho.ready_flag = False
        async with client_for(echo) as client:
            assert check(await client.get("/v2/health/ready"), 503).json() == {"ready": False}
            body = check(await client.get("/v2/models/m/ready"), 503).json()
            assert body == {"name": "m", "ready": False}
    finally:
        AsyncEcho.ready_flag = True

    # Every documented operation was held to a real answer.
    assert checker.exercised == {(path, method) for path, method, _ in operations(checker.doc)}


def test_repository_paths_follow_the_flag():
    enabled, disabled = documents()
    assert "/v2/repository/index" in enabled["paths"]
    assert not [path for path in disabled["paths"] if path.startswith("/v2/repository")]
