"""Route handlers of the sync protocol (SERVER.md §5, §6, §8, §9; ``two_way_sync.yaml``).

Each handler is a thin translation: read the raw body and path/query values with the Go-faithful
parsers of :mod:`.decoding` and :mod:`.query`, call the one :class:`SyncService` method of its
endpoint (the facade times each operation for ``ServiceConfig.observer``) and
write the wire Struct with :func:`.responses.json_response`. Contract errors travel as
:class:`~oversync_sa.errors.WireError` exceptions to :mod:`.exceptions`; anything unexpected
becomes the route's ``*_failed`` code declared with :func:`.exceptions.failure_opt`.

Handlers get their collaborators as Litestar dependencies (``actor``/``optional_actor`` from
:mod:`.actor`, ``sync`` from :func:`sync_dependencies`), so the actor checks run after routing
(405 first) and before the body is read (401/400 before body errors), the order of §9.2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, Union

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, SkipValidation
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from oversync_sa.errors import (
    AuthenticationFailedError,
    BundleChangeWatchDisabledError,
    BundleChangeWatchFailedError,
    BundleChangeWatchForbiddenError,
    CommittedBundleChunkInvalidError,
    CommittedBundleNotFoundError,
    CommittedBundleRowsFailedError,
    ConnectFailedError,
    HealthFailedError,
    HistoryPrunedError,
    InitializationExpiredError,
    InitializationStaleError,
    InvalidRequestError,
    PullFailedError,
    PushChunkFailedError,
    PushChunkInvalidError,
    PushChunkOutOfOrderError,
    PushCommitInvalidError,
    PushConflictError,
    PushSessionCommitFailedError,
    PushSessionCreateFailedError,
    PushSessionDeleteFailedError,
    PushSessionExpiredError,
    PushSessionForbiddenError,
    PushSessionInvalidError,
    PushSessionNotFoundError,
    ScopeInitializingError,
    ScopeUninitializedError,
    ServiceUnavailableError,
    SnapshotChunkFailedError,
    SnapshotChunkInvalidError,
    SnapshotSessionCreateFailedError,
    SnapshotSessionDeleteFailedError,
    SnapshotSessionExpiredError,
    SnapshotSessionForbiddenError,
    SnapshotSessionInvalidError,
    SnapshotSessionNotFoundError,
    SourceReplacementInvalidError,
    SourceRetiredError,
    SourceSequenceChangedError,
    SourceSequenceOutOfOrderError,
    StatusFailedError,
    WireError,
)
from oversync_sa.litestar.actor import ActorDependency, OptionalActorDependency
from oversync_sa.litestar.decoding import DecodeError, decode_request
from oversync_sa.litestar.exceptions import failure_opt
from oversync_sa.litestar.openapi import OptionalBodyOperation, SyncOperation
from oversync_sa.litestar.query import (
    parse_committed_rows_params,
    parse_pull_params,
    parse_snapshot_chunk_params,
    parse_snapshot_id,
)
from oversync_sa.litestar.responses import SSE_MEDIA_TYPE, json_response
from oversync_sa.server.capabilities import WatchPolicy, capabilities
from oversync_sa.server.service import SyncService
from oversync_sa.wire.models import (
    BundleChangeEvent,
    CapabilitiesResponse,
    CommittedBundleRowsResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    PullResponse,
    PushConflictResponse,
    PushSessionChunkRequest,
    PushSessionChunkResponse,
    PushSessionCommitResponse,
    PushSessionCreateRequest,
    PushSessionCreateResponse,
    SnapshotChunkResponse,
    SnapshotSession,
    SnapshotSessionCreateRequest,
    SourceRetiredResponse,
    StatusResponse,
)

__all__ = [
    "STATUS_ROUTE_HANDLERS",
    "SYNC_ROUTE_HANDLERS",
    "WATCH_RESPONSES",
    "SyncContext",
    "SyncDependency",
    "sync_dependencies",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class SyncContext:
    """What the handlers need besides the actor: the service and the optional watch policy."""

    service: SyncService
    watch_policy: WatchPolicy | None = None


#: Handler annotation for the injected :class:`SyncContext`: ``sync: SyncDependency``. Not
#: validated: it is the router's own object, and its callable field has no msgspec type.
SyncDependency = NamedDependency[SkipValidation[SyncContext]]


def sync_dependencies(context: SyncContext) -> dict[str, Provide]:
    """The ``sync`` dependency for a router mounting these handlers."""

    def provide_sync() -> SyncContext:
        return context

    return {"sync": Provide(provide_sync, use_cache=True, sync_to_thread=False)}


# ------------------------------------------------------------------------------ body handling


async def _read_body(request: Request[Any, Any, Any], error: WireError) -> bytes:
    """The raw body; a body over the route's size limit is the endpoint's decode error.

    The contract has no 413: an oversized body is just a request the endpoint cannot decode.
    """
    try:
        return await request.body()
    except HTTPException as exc:
        if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
            _log.info("request body over the size limit on %s", request.url.path)
            raise error from None
        raise


async def _decode_body(
    request: Request[Any, Any, Any], target_type: type[_T], error: WireError, **options: Any
) -> _T:
    body = await _read_body(request, error)
    try:
        return decode_request(body, target_type, **options)
    except DecodeError as exc:
        # Go's answer names the request, not the parse detail; the detail helps the operator.
        _log.debug("undecodable body on %s: %s", request.url.path, exc)
        raise error from None


# --------------------------------------------------------------------------- OpenAPI helpers

_AUTH_ERRORS: Final = (AuthenticationFailedError, InvalidRequestError, ServiceUnavailableError)
_STRUCTURED_409: Final[Mapping[type[WireError], type[msgspec.Struct]]] = {
    SourceRetiredError: SourceRetiredResponse,
    PushConflictError: PushConflictResponse,
}


def _responses(
    success: type[msgspec.Struct] | None, *errors: type[WireError], auth: bool = True
) -> dict[int, ResponseSpec]:
    """OpenAPI responses of one route: its success body and one entry per error status.

    Each error entry lists the codes it can carry, and the body schemas they use: the generic
    ``ErrorResponse`` or the structured ``SourceRetiredResponse`` / ``PushConflictResponse``.
    """
    by_status: dict[int, list[type[WireError]]] = {}
    for error in (*(_AUTH_ERRORS if auth else ()), *errors):
        codes = by_status.setdefault(error.status, [])
        if error not in codes:
            codes.append(error)
    specs: dict[int, ResponseSpec] = {}
    if success is not None:
        specs[200] = ResponseSpec(
            data_container=success, description="Success", generate_examples=False
        )
    for code, error_types in sorted(by_status.items()):
        schemas = tuple(dict.fromkeys(_STRUCTURED_409.get(e, ErrorResponse) for e in error_types))
        # Several body shapes on one status become a oneOf of their schemas.
        container: Any = schemas[0] if len(schemas) == 1 else Union[schemas]  # noqa: UP007
        specs[code] = ResponseSpec(
            data_container=container,
            description=", ".join(f"`{e.code}`" for e in error_types),
            generate_examples=False,
        )
    return specs


def _documented_body(body_type: type[msgspec.Struct]) -> dict[str, Provide]:
    """A dependency that only documents ``body_type`` as the route's OpenAPI request body.

    Bodies are read raw and decoded with Go's rules (:mod:`.decoding`), so no handler has a
    ``data`` parameter for Litestar to describe. Litestar also documents the ``data`` of a
    route's dependencies; this one is never requested by the handler, so it never runs and the
    body is never parsed by Litestar.
    """

    def openapi_request_body(data: Any) -> None:  # pragma: no cover - never resolved
        raise AssertionError("documentation-only dependency")

    # A real type, not a string: with ``from __future__ import annotations`` the name would
    # have to be resolvable from this module's globals.
    openapi_request_body.__annotations__ = {"data": body_type, "return": None}
    return {"openapi_request_body": Provide(openapi_request_body, sync_to_thread=False)}


_SYNC_TAG: Final = ["sync"]

# ---------------------------------------------------------------------------------- push


@post(
    "/connect",
    status_code=200,
    operation_id="connect",
    operation_class=SyncOperation,
    summary="Resolve first-connect account attachment",
    tags=_SYNC_TAG,
    opt=failure_opt(ConnectFailedError, "Failed to resolve connect lifecycle"),
    dependencies=_documented_body(ConnectRequest),
    responses=_responses(ConnectResponse, ConnectFailedError),
)
async def connect_route(
    request: Request[Any, Any, Any], actor: ActorDependency, sync: SyncDependency
) -> Response[bytes]:
    """``POST /sync/connect`` (§4): a top-level ``null`` body is the zero request."""
    body = await _decode_body(
        request, ConnectRequest, InvalidRequestError("Failed to parse connect request")
    )
    return json_response(await sync.service.connect(actor, body))


@post(
    "/push-sessions",
    status_code=200,
    operation_id="createPushSession",
    operation_class=SyncOperation,
    summary="Create or restart chunked push session",
    tags=_SYNC_TAG,
    opt=failure_opt(PushSessionCreateFailedError, "Failed to create push session"),
    dependencies=_documented_body(PushSessionCreateRequest),
    responses=_responses(
        PushSessionCreateResponse,
        PushSessionInvalidError,
        ScopeUninitializedError,
        ScopeInitializingError,
        InitializationStaleError,
        HistoryPrunedError,
        SourceSequenceOutOfOrderError,
        SourceRetiredError,
        InitializationExpiredError,
        PushSessionCreateFailedError,
    ),
)
async def create_push_session_route(
    request: Request[Any, Any, Any], actor: ActorDependency, sync: SyncDependency
) -> Response[bytes]:
    """``POST /sync/push-sessions`` (§5.1); the body's ``source_id`` is ignored."""
    body = await _decode_body(
        request,
        PushSessionCreateRequest,
        InvalidRequestError("Failed to parse push session request"),
    )
    result = await sync.service.create_push_session(actor, body)
    return json_response(result)


@post(
    "/push-sessions/{push_id:str}/chunks",
    status_code=200,
    operation_id="uploadPushSessionChunk",
    operation_class=SyncOperation,
    summary="Upload one chunk of a push session",
    tags=_SYNC_TAG,
    opt=failure_opt(PushChunkFailedError, "Failed to upload push chunk"),
    dependencies=_documented_body(PushSessionChunkRequest),
    responses=_responses(
        PushSessionChunkResponse,
        PushChunkInvalidError,
        PushChunkOutOfOrderError,
        InitializationStaleError,
        PushSessionForbiddenError,
        PushSessionNotFoundError,
        PushSessionExpiredError,
        InitializationExpiredError,
        PushChunkFailedError,
    ),
)
async def upload_push_chunk_route(
    request: Request[Any, Any, Any],
    push_id: FromPath[str],
    actor: ActorDependency,
    sync: SyncDependency,
) -> Response[bytes]:
    """``POST /sync/push-sessions/{push_id}/chunks`` (§5.2).

    ``push_id`` goes to the service verbatim: rows are validated before the session is looked
    up, so an invalid chunk for an unknown session is a 400, and the answer echoes the path id.
    """
    body = await _decode_body(
        request, PushSessionChunkRequest, InvalidRequestError("Failed to parse push chunk request")
    )
    result = await sync.service.upload_push_chunk(actor, push_id, body)
    return json_response(result)


@post(
    "/push-sessions/{push_id:str}/commit",
    status_code=200,
    operation_id="commitPushSession",
    operation_class=SyncOperation,
    summary="Commit a staged push session as one bundle",
    tags=_SYNC_TAG,
    opt=failure_opt(PushSessionCommitFailedError, "Failed to commit push session"),
    responses=_responses(
        PushSessionCommitResponse,
        PushCommitInvalidError,
        PushSessionForbiddenError,
        PushSessionNotFoundError,
        PushConflictError,
        SourceSequenceChangedError,
        SourceRetiredError,
        InitializationStaleError,
        PushSessionExpiredError,
        InitializationExpiredError,
        PushSessionCommitFailedError,
    ),
)
async def commit_push_session_route(
    push_id: FromPath[str], actor: ActorDependency, sync: SyncDependency
) -> Response[bytes]:
    """``POST /sync/push-sessions/{push_id}/commit`` (§5.3); any body is ignored."""
    result = await sync.service.commit_push_session(actor, push_id)
    return json_response(result)


@delete(
    "/push-sessions/{push_id:str}",
    status_code=204,
    operation_id="deletePushSession",
    operation_class=SyncOperation,
    summary="Discard a staging push session",
    tags=_SYNC_TAG,
    opt=failure_opt(PushSessionDeleteFailedError, "Failed to delete push session"),
    responses=_responses(
        None,
        PushSessionForbiddenError,
        PushSessionNotFoundError,
        PushSessionExpiredError,
        PushSessionDeleteFailedError,
    ),
)
async def delete_push_session_route(
    push_id: FromPath[str], actor: ActorDependency, sync: SyncDependency
) -> None:
    """``DELETE /sync/push-sessions/{push_id}`` (§5.5): 204 without a body."""
    await sync.service.delete_push_session(actor, push_id)


# ---------------------------------------------------------------------------------- reading


@get(
    "/committed-bundles/{bundle_seq:str}/rows",
    operation_id="getCommittedBundleRows",
    operation_class=SyncOperation,
    summary="Fetch one page of a committed bundle's rows",
    tags=_SYNC_TAG,
    opt=failure_opt(CommittedBundleRowsFailedError, "Failed to fetch committed bundle rows"),
    responses=_responses(
        CommittedBundleRowsResponse,
        CommittedBundleChunkInvalidError,
        CommittedBundleNotFoundError,
        HistoryPrunedError,
        CommittedBundleRowsFailedError,
    ),
)
async def committed_bundle_rows_route(
    request: Request[Any, Any, Any],
    bundle_seq: FromPath[str],
    actor: ActorDependency,
    sync: SyncDependency,
) -> Response[bytes]:
    """``GET /sync/committed-bundles/{bundle_seq}/rows`` (§6.1).

    The path segment is taken as text so that a non-integer is the contract's 400, not
    Litestar's own path-type rejection.
    """
    seq, params = parse_committed_rows_params(bundle_seq, request.query_params)
    result = await sync.service.committed_bundle_rows(
        actor,
        seq,
        after_row_ordinal=params.after_row_ordinal,
        max_rows=params.max_rows,
    )
    return json_response(result)


@get(
    "/pull",
    operation_id="pull",
    operation_class=SyncOperation,
    summary="Pull committed bundles",
    tags=_SYNC_TAG,
    opt=failure_opt(PullFailedError, "Failed to process pull"),
    responses=_responses(
        PullResponse,
        ScopeUninitializedError,
        ScopeInitializingError,
        HistoryPrunedError,
        PullFailedError,
    ),
)
async def pull_route(
    request: Request[Any, Any, Any], actor: ActorDependency, sync: SyncDependency
) -> Response[bytes]:
    """``GET /sync/pull`` (§6.2): query errors are ``400 invalid_request`` before any lookup."""
    params = parse_pull_params(request.query_params)
    # The page's JSON is rendered by PostgreSQL, byte-identical to PullResponse's encoding.
    result = await sync.service.pull_encoded(
        actor,
        after_bundle_seq=params.after_bundle_seq,
        max_bundles=params.max_bundles,
        target_bundle_seq=params.target_bundle_seq,
    )
    return json_response(result.wire)


@post(
    "/snapshot-sessions",
    status_code=200,
    operation_id="createSnapshotSession",
    summary="Create a frozen, chunked snapshot session",
    tags=_SYNC_TAG,
    opt=failure_opt(SnapshotSessionCreateFailedError, "Failed to create snapshot session"),
    # The body is optional (empty means keep the source): documented, but not required.
    dependencies=_documented_body(SnapshotSessionCreateRequest),
    operation_class=OptionalBodyOperation,
    responses=_responses(
        SnapshotSession,
        SnapshotSessionInvalidError,
        ScopeUninitializedError,
        ScopeInitializingError,
        SourceReplacementInvalidError,
        SourceRetiredError,
        SnapshotSessionCreateFailedError,
    ),
)
async def create_snapshot_session_route(
    request: Request[Any, Any, Any], actor: ActorDependency, sync: SyncDependency
) -> Response[bytes]:
    """``POST /sync/snapshot-sessions`` (§6.3): strict body, empty means keep-source."""
    parse_error = SnapshotSessionInvalidError("Failed to parse snapshot session request")
    raw = await _read_body(request, parse_error)
    body: SnapshotSessionCreateRequest | None = None
    if raw.strip(b" \t\r\n"):
        try:
            body = decode_request(
                raw, SnapshotSessionCreateRequest, trailing="reject", unknown="reject"
            )
        except DecodeError as exc:
            _log.debug("undecodable snapshot session request: %s", exc)
            raise parse_error from None
    return json_response(await sync.service.create_snapshot_session(actor, body))


@get(
    "/snapshot-sessions/{snapshot_id:str}",
    operation_id="getSnapshotChunk",
    operation_class=SyncOperation,
    summary="Fetch one chunk of a snapshot session",
    tags=_SYNC_TAG,
    opt=failure_opt(SnapshotChunkFailedError, "Failed to get snapshot chunk"),
    responses=_responses(
        SnapshotChunkResponse,
        SnapshotChunkInvalidError,
        SnapshotSessionForbiddenError,
        SnapshotSessionNotFoundError,
        SnapshotSessionExpiredError,
        SnapshotChunkFailedError,
    ),
)
async def snapshot_chunk_route(
    request: Request[Any, Any, Any],
    snapshot_id: FromPath[str],
    actor: ActorDependency,
    sync: SyncDependency,
) -> Response[bytes]:
    """``GET /sync/snapshot-sessions/{snapshot_id}`` (§6.3): query checked before the id."""
    params = parse_snapshot_chunk_params(request.query_params)
    # Rendered to JSON by PostgreSQL, byte-identical to SnapshotChunkResponse's encoding.
    result = await sync.service.snapshot_chunk_encoded(
        actor,
        parse_snapshot_id(snapshot_id),
        after_row_ordinal=params.after_row_ordinal,
        max_rows=params.max_rows,
    )
    return json_response(result)


@delete(
    "/snapshot-sessions/{snapshot_id:str}",
    status_code=204,
    operation_id="deleteSnapshotSession",
    operation_class=SyncOperation,
    summary="Delete a snapshot session",
    tags=_SYNC_TAG,
    opt=failure_opt(SnapshotSessionDeleteFailedError, "Failed to delete snapshot session"),
    responses=_responses(
        None,
        SnapshotChunkInvalidError,
        SnapshotSessionForbiddenError,
        SnapshotSessionNotFoundError,
        SnapshotSessionDeleteFailedError,
    ),
)
async def delete_snapshot_session_route(
    snapshot_id: FromPath[str], actor: ActorDependency, sync: SyncDependency
) -> None:
    """``DELETE /sync/snapshot-sessions/{snapshot_id}`` (§6.3): 204, no expiry check."""
    await sync.service.delete_snapshot_session(actor, parse_snapshot_id(snapshot_id))


@get(
    "/capabilities",
    operation_id="getCapabilities",
    operation_class=SyncOperation,
    summary="Get protocol capabilities",
    tags=_SYNC_TAG,
    # No actor is needed, but a JWT-protected router still refuses a bad token (401).
    responses=_responses(CapabilitiesResponse, AuthenticationFailedError, auth=False),
)
async def capabilities_route(
    optional_actor: OptionalActorDependency, sync: SyncDependency
) -> Response[bytes]:
    """``GET /sync/capabilities`` (§6.4): no actor needed; one makes the watch flag personal."""
    result = await capabilities(
        sync.service.config, optional_actor, watch_policy=sync.watch_policy
    )
    return json_response(result)


#: OpenAPI responses of ``GET /sync/watch`` (:mod:`.watch_route`): an SSE stream whose
#: ``bundle`` events carry a ``BundleChangeEvent`` each, or one of the contract's errors.
WATCH_RESPONSES: Final[dict[int, ResponseSpec]] = {
    **_responses(
        None,
        BundleChangeWatchForbiddenError,
        ScopeUninitializedError,
        ScopeInitializingError,
        BundleChangeWatchDisabledError,
        BundleChangeWatchFailedError,
    ),
    200: ResponseSpec(
        data_container=BundleChangeEvent,
        media_type=SSE_MEDIA_TYPE,
        description=(
            "SSE stream: `event: bundle` frames whose data is a BundleChangeEvent, and "
            "`: heartbeat` comments"
        ),
        generate_examples=False,
    ),
}


# ----------------------------------------------------------------------------- syncx status

_SYNCX_TAG: Final = ["syncx"]


@get(
    "/health",
    operation_id="getHealth",
    summary="Readiness health check",
    tags=_SYNCX_TAG,
    opt=failure_opt(HealthFailedError, "Failed to get health status"),
    responses={
        200: ResponseSpec(StatusResponse, description="Healthy", generate_examples=False),
        503: ResponseSpec(
            StatusResponse, description="Unhealthy or shutting down", generate_examples=False
        ),
        500: ResponseSpec(
            ErrorResponse, description=f"`{HealthFailedError.code}`", generate_examples=False
        ),
    },
)
async def health_route(sync: SyncDependency) -> Response[bytes]:
    """``GET /syncx/health`` (§6.5): the status object with 200, or 503 when unhealthy."""
    body, code = await sync.service.health()
    return json_response(body, code)


@get(
    "/status",
    operation_id="getStatus",
    summary="Service status snapshot",
    tags=_SYNCX_TAG,
    opt=failure_opt(StatusFailedError, "Failed to get service status"),
    responses={
        200: ResponseSpec(StatusResponse, description="Service status", generate_examples=False),
        500: ResponseSpec(
            ErrorResponse, description=f"`{StatusFailedError.code}`", generate_examples=False
        ),
    },
)
async def status_route(sync: SyncDependency) -> Response[bytes]:
    """``GET /syncx/status`` (§6.5): always 200 with the object, even when unhealthy."""
    return json_response(await sync.service.status())


#: Handlers for a router at ``/sync`` (the watch route is mounted separately).
SYNC_ROUTE_HANDLERS: Final[tuple[HTTPRouteHandler, ...]] = (
    connect_route,
    create_push_session_route,
    upload_push_chunk_route,
    commit_push_session_route,
    delete_push_session_route,
    committed_bundle_rows_route,
    pull_route,
    create_snapshot_session_route,
    snapshot_chunk_route,
    delete_snapshot_session_route,
    capabilities_route,
)

#: Handlers for an unauthenticated router at ``/syncx``.
STATUS_ROUTE_HANDLERS: Final[tuple[HTTPRouteHandler, ...]] = (health_route, status_route)
