"""A tiny app wiring the adapter pieces together, driven over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar import Litestar, Request, Router, get, post
from litestar._kwargs import kwargs_model
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.testing import TestClient

from oversync_sa.errors import InvalidRequestError, PullFailedError, SourceRetiredError
from oversync_sa.litestar import (
    SOURCE_ID_HEADER,
    ActorDependency,
    DecodeError,
    JWTAuthMiddleware,
    JWTConfig,
    OptionalActorDependency,
    actor_dependencies,
    decode_request,
    exception_handlers,
    failure_opt,
    issue_token,
    json_response,
    parse_pull_params,
    parse_push_id,
    sse_event,
    sync_router_actor_dependencies,
)
from oversync_sa.wire import BundleChangeEvent, PushSessionChunkRequest, PushSessionChunkResponse

SECRET = "app-test-secret-of-sufficient-len"


@post("/connect", status_code=200)
async def _connect(actor: ActorDependency, request: Request[Any, Any, Any]) -> Any:
    try:
        chunk = decode_request(await request.body(), PushSessionChunkRequest)
    except DecodeError:
        raise InvalidRequestError("Failed to parse connect request") from None
    return json_response({"user": actor.user_id, "source": actor.source_id,
                          "rows": len(chunk.rows)})


@post("/push-sessions/{push_id:str}/chunks", status_code=200)
async def _chunk(actor: ActorDependency, push_id: FromPath[str]) -> Any:
    return json_response(PushSessionChunkResponse(push_id=parse_push_id(push_id),
                                                  next_expected_row_ordinal=0))


@get("/pull", opt=failure_opt(PullFailedError, "Failed to process pull"))
async def _pull(actor: ActorDependency, request: Request[Any, Any, Any]) -> Any:
    params = parse_pull_params(request.query_params)
    if params.after_bundle_seq == 99:
        raise RuntimeError("database password is hunter2")
    if params.after_bundle_seq == 98:
        raise SourceRetiredError("source s was retired", source_id="s")
    return json_response({"after": params.after_bundle_seq})


@get("/capabilities")
async def _capabilities(optional_actor: OptionalActorDependency) -> Any:
    return json_response({"actor": optional_actor.user_id if optional_actor else None})


@get("/undeclared")
async def _undeclared(actor: ActorDependency) -> Any:
    raise ValueError("secret detail")


def _app(plain_text: bool = False) -> Litestar:
    sync = Router(
        path="/sync",
        route_handlers=[_connect, _chunk, _pull, _capabilities, _undeclared],
        dependencies=actor_dependencies(),
        middleware=[JWTAuthMiddleware(JWTConfig(key=SECRET, plain_text_errors=plain_text))],
    )
    return Litestar(route_handlers=[sync], exception_handlers=exception_handlers)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(_app()) as test_client:
        yield test_client


def _auth(user: str = "user-1", source: str | None = "device-a") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {issue_token(user, SECRET)}"}
    if source is not None:
        headers[SOURCE_ID_HEADER] = source
    return headers


def _assert_json(response: Any, status: int, body: dict[str, Any]) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.content.endswith(b"}\n")
    assert json.loads(response.content) == body


def test_happy_path_gets_actor_and_go_framing(client: TestClient[Litestar]) -> None:
    response = client.post("/sync/connect", content=b'{"rows":[{}]} trailing',
                           headers=_auth(source="  device-a "))
    _assert_json(response, 200, {"user": "user-1", "source": "device-a", "rows": 1})


def test_struct_response_keeps_field_order(client: TestClient[Litestar]) -> None:
    push_id = "0b0f6a2e-6d2c-4f5e-9a57-1c2d3e4f5a6b"
    response = client.post(f"/sync/push-sessions/{push_id}/chunks", headers=_auth())
    assert response.content == (
        b'{"push_id":"' + push_id.encode() + b'","next_expected_row_ordinal":0}\n'
    )


def test_non_uuid_push_id_is_404(client: TestClient[Litestar]) -> None:
    response = client.post("/sync/push-sessions/nope/chunks", headers=_auth())
    _assert_json(response, 404, {"error": "push_session_not_found",
                                 "message": "push session nope was not found"})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authorization header required"),
        ({"Authorization": "   "}, "Authorization header required"),
        ({"Authorization": "Token abc"}, "Invalid authorization header format"),
        ({"Authorization": "Bearer a b"}, "Invalid authorization header format"),
        ({"Authorization": "bearer abc"}, "Invalid authorization header format"),
        ({"Authorization": "Bearer abc"}, "Invalid token"),
    ],
)
def test_jwt_rejections_are_json_401(
    client: TestClient[Litestar], headers: dict[str, str], message: str
) -> None:
    response = client.post("/sync/connect", content=b"{}", headers=headers)
    _assert_json(response, 401, {"error": "authentication_failed", "message": message})


def test_jwt_rejection_plain_text_option() -> None:
    with TestClient(_app(plain_text=True)) as plain:
        response = plain.post("/sync/connect", content=b"{}")
    assert response.status_code == 401
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == b"Authorization header required\n"


@pytest.mark.parametrize("source", [None, "", "   "])
def test_missing_source_header_is_400(client: TestClient[Litestar], source: str | None) -> None:
    response = client.post("/sync/connect", content=b"{}", headers=_auth(source=source))
    _assert_json(response, 400, {"error": "invalid_request",
                                 "message": "Oversync-Source-ID header is required"})


def test_blank_user_is_401() -> None:
    app = Litestar(
        route_handlers=[Router(path="/sync", route_handlers=[_connect],
                               dependencies=actor_dependencies(lambda _: "  "))],
        exception_handlers=exception_handlers,
    )
    with TestClient(app) as test_client:
        response = test_client.post("/sync/connect", content=b"{}",
                                    headers={SOURCE_ID_HEADER: "d"})
    _assert_json(response, 401, {"error": "authentication_failed",
                                 "message": "authenticated user_id not found in request context"})


def test_failing_async_resolver_is_401() -> None:
    async def broken(_: object) -> str:
        raise LookupError("no session store")

    app = Litestar(
        route_handlers=[Router(path="/sync", route_handlers=[_connect],
                               dependencies=actor_dependencies(broken))],
        exception_handlers=exception_handlers,
    )
    with TestClient(app) as test_client:
        response = test_client.post("/sync/connect", content=b"{}",
                                    headers={SOURCE_ID_HEADER: "d"})
    assert response.status_code == 401


def test_capabilities_actor_is_optional(client: TestClient[Litestar]) -> None:
    token_only = {"Authorization": _auth()["Authorization"]}
    _assert_json(client.get("/sync/capabilities", headers=token_only), 200, {"actor": None})
    _assert_json(client.get("/sync/capabilities", headers=_auth()), 200, {"actor": "user-1"})


def test_decode_error_maps_to_invalid_request(client: TestClient[Litestar]) -> None:
    response = client.post("/sync/connect", content=b"", headers=_auth())
    _assert_json(response, 400, {"error": "invalid_request",
                                 "message": "Failed to parse connect request"})


def test_query_error_maps_to_invalid_request(client: TestClient[Litestar]) -> None:
    response = client.get("/sync/pull?max_bundles=0", headers=_auth())
    _assert_json(response, 400, {"error": "invalid_request",
                                 "message": "max_bundles must be between 1 and 5000"})


def test_structured_wire_error_body(client: TestClient[Litestar]) -> None:
    response = client.get("/sync/pull?after_bundle_seq=98", headers=_auth())
    _assert_json(response, 409, {"error": "source_retired", "message": "source s was retired",
                                 "source_id": "s"})


def test_unexpected_error_is_declared_failure_without_detail(
    client: TestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/sync/pull?after_bundle_seq=99", headers=_auth())
    _assert_json(response, 500, {"error": "pull_failed", "message": "Failed to process pull"})
    assert "hunter2" not in response.text
    assert any("hunter2" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_unexpected_error_without_declaration_is_generic_500(
    client: TestClient[Litestar],
) -> None:
    response = client.get("/sync/undeclared", headers=_auth())
    _assert_json(response, 500, {"error": "internal_error", "message": "Internal server error"})


def test_wrong_method_on_sync_route_is_json_405(client: TestClient[Litestar]) -> None:
    response = client.delete("/sync/pull", headers=_auth())
    _assert_json(response, 405, {"error": "method_not_allowed",
                                 "message": "Only GET method is allowed"})
    assert "GET" in response.headers["allow"]


def test_unknown_path_keeps_litestar_default(client: TestClient[Litestar]) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert "error" not in response.json()


def test_sse_event_framing() -> None:
    event = BundleChangeEvent(bundle_seq=124, source_id="device-a", source_bundle_id=7)
    assert sse_event("bundle", event) == (
        b'event: bundle\ndata: {"bundle_seq":124,"source_id":"device-a","source_bundle_id":7}\n\n'
    )
    assert sse_event("bundle", BundleChangeEvent(bundle_seq=5)) == (
        b'event: bundle\ndata: {"bundle_seq":5}\n\n'
    )


def test_raw_payload_passes_through_json_response() -> None:
    body = json_response({"payload": msgspec.Raw(b'{"a": 1}')}).content
    assert body == b'{"payload":{"a": 1}}\n'


# ------------------------------------------------ actor resolved after the router's ``sync``


@get("/both")
async def _both(actor: ActorDependency, sync: NamedDependency[Any]) -> Any:
    return json_response({"user": actor.user_id, "source": actor.source_id, "sync": sync})


@get("/maybe")
async def _maybe(optional_actor: OptionalActorDependency, sync: NamedDependency[Any]) -> Any:
    return json_response({"actor": optional_actor.user_id if optional_actor else None,
                          "sync": sync})


def _sync_router_app() -> Litestar:
    def provide_sync() -> str:
        return "context"

    return Litestar(
        route_handlers=[Router(
            path="/sync",
            route_handlers=[_both, _maybe],
            dependencies={
                **sync_router_actor_dependencies(lambda c: c.headers.get("x-user")),
                "sync": Provide(provide_sync, use_cache=True, sync_to_thread=False),
            },
        )],
        exception_handlers=exception_handlers,
    )


def test_sync_router_actor_dependencies_resolve_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Litestar makes an anyio task group only for several dependencies of one depth.
    def no_task_group() -> Any:
        raise AssertionError("dependencies resolved concurrently")

    monkeypatch.setattr(kwargs_model, "create_task_group", no_task_group)
    with TestClient(_sync_router_app()) as test_client:
        ok = test_client.get("/sync/both", headers={"x-user": " u1 ", SOURCE_ID_HEADER: "d"})
        _assert_json(ok, 200, {"user": "u1", "source": "d", "sync": "context"})
        _assert_json(test_client.get("/sync/both", headers={SOURCE_ID_HEADER: "d"}), 401,
                     {"error": "authentication_failed",
                      "message": "authenticated user_id not found in request context"})
        _assert_json(test_client.get("/sync/both", headers={"x-user": "u1"}), 400,
                     {"error": "invalid_request",
                      "message": "Oversync-Source-ID header is required"})
        _assert_json(test_client.get("/sync/maybe"), 200, {"actor": None, "sync": "context"})
        _assert_json(test_client.get("/sync/maybe", headers={"x-user": "u1",
                                                             SOURCE_ID_HEADER: "d"}),
                     200, {"actor": "u1", "sync": "context"})


def test_plain_actor_dependencies_beside_sync_would_resolve_concurrently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The case the chained providers avoid (keeps the test above honest).
    made: list[int] = []
    real = kwargs_model.create_task_group

    def counting() -> Any:
        made.append(1)
        return real()

    monkeypatch.setattr(kwargs_model, "create_task_group", counting)
    app = Litestar(
        route_handlers=[Router(
            path="/sync", route_handlers=[_both],
            dependencies={**actor_dependencies(lambda c: c.headers.get("x-user")),
                          "sync": Provide(lambda: "context", sync_to_thread=False)},
        )],
        exception_handlers=exception_handlers,
    )
    with TestClient(app) as test_client:
        response = test_client.get("/sync/both", headers={"x-user": "u1", SOURCE_ID_HEADER: "d"})
    assert response.status_code == 200
    assert made
