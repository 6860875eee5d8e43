"""Litestar adapter of the sync protocol: actor layer, JWT auth, decoding, responses, errors.

The only package of oversync-sa that imports Litestar.
"""

from oversync_sa.litestar.actor import (
    SOURCE_ID_HEADER,
    Actor,
    ActorDependency,
    OptionalActorDependency,
    UserIdResolver,
    actor_dependencies,
    scope_user_id,
    sync_router_actor_dependencies,
)
from oversync_sa.litestar.decoding import DecodeError, decode_request
from oversync_sa.litestar.exceptions import (
    FAILURE_OPT_KEY,
    SYNC_PATH_PREFIX,
    exception_handlers,
    failure_opt,
)
from oversync_sa.litestar.jwt import (
    EXAMPLE_ISSUER,
    JWTAuthMiddleware,
    JWTConfig,
    TokenError,
    issue_token,
    verify_token,
)
from oversync_sa.litestar.metrics import metrics_route
from oversync_sa.litestar.plugin import (
    DEFAULT_MAX_BODY_SIZE,
    OversyncPlugin,
    create_status_router,
    create_sync_router,
)
from oversync_sa.litestar.query import (
    DEFAULT_PULL_MAX_BUNDLES,
    MAX_PULL_BUNDLES,
    ChunkParams,
    PullParams,
    parse_committed_rows_params,
    parse_go_int,
    parse_pull_params,
    parse_push_id,
    parse_snapshot_chunk_params,
    parse_snapshot_id,
    parse_watch_after,
)
from oversync_sa.litestar.responses import (
    JSON_MEDIA_TYPE,
    SSE_HEADERS,
    SSE_HEARTBEAT,
    SSE_MEDIA_TYPE,
    encode_json,
    error_response,
    json_response,
    send_raw_response,
    sse_event,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PULL_MAX_BUNDLES",
    "EXAMPLE_ISSUER",
    "FAILURE_OPT_KEY",
    "JSON_MEDIA_TYPE",
    "MAX_PULL_BUNDLES",
    "OptionalActorDependency",
    "SOURCE_ID_HEADER",
    "SSE_HEADERS",
    "SSE_HEARTBEAT",
    "SSE_MEDIA_TYPE",
    "SYNC_PATH_PREFIX",
    "Actor",
    "ActorDependency",
    "ChunkParams",
    "DecodeError",
    "JWTAuthMiddleware",
    "JWTConfig",
    "OversyncPlugin",
    "PullParams",
    "TokenError",
    "UserIdResolver",
    "actor_dependencies",
    "sync_router_actor_dependencies",
    "create_status_router",
    "create_sync_router",
    "decode_request",
    "encode_json",
    "error_response",
    "exception_handlers",
    "failure_opt",
    "issue_token",
    "json_response",
    "metrics_route",
    "parse_committed_rows_params",
    "parse_go_int",
    "parse_pull_params",
    "parse_push_id",
    "parse_snapshot_chunk_params",
    "parse_snapshot_id",
    "parse_watch_after",
    "scope_user_id",
    "send_raw_response",
    "sse_event",
    "verify_token",
]
