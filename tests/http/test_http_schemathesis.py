"""The contract against the live app: Schemathesis, and the served OpenAPI document.

Schemathesis, driven by the contract: no 5xx, nothing off-contract. Every operation of
``docs/api/two_way_sync.yaml`` is fuzzed with a bounded number of examples (valid and invalid
data), authenticated with a valid token, and each answer is checked for server errors and for
conformance to the contract's status codes, content types and response schemas.
A stateful run then follows the links added in :mod:`.schemathesis_support` (push
session -> chunks -> commit -> committed rows; snapshot -> chunk -> delete).

Random data almost never forms a valid push row (registered table, UUID key, matching payload),
so :func:`flatmap_body` sometimes swaps a generated push body for a valid one: that is what
lets the stateful run reach staging, commit, ``already_committed`` and ``push_conflict``.

Where the contract itself is wrong, the answer is checked against what it should have said;
see :func:`_contract_defect`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import httpx
import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, strategies as st
from litestar import Litestar
from schemathesis import Case, GenerationMode, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from oversync_sa.litestar import JWTConfig
from oversync_sa.litestar.plugin import OversyncPlugin
from oversync_sa.testing import PostgresServer
from tests.http.http_support import app_client, make_service
from tests.http.schemathesis_support import (
    SECRET,
    SEEDED_KEY,
    auth_headers,
    build_app,
    contract_with_links,
    fresh_source,
    load_contract,
    seeded_database,
    user_row,
)

pytestmark = pytest.mark.postgres

#: No 5xx, and every answer within the contract: status code, content type, body schema.
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation (the whole module runs in well under a minute).
MAX_EXAMPLES: Final = 25
#: Stateful scenarios, each of up to ``STATEFUL_STEP_COUNT`` linked calls. Derandomized runs
#: are not fully reproducible across test selections: Hypothesis also draws (p = 0.05)
#: string/int constants harvested from every *loaded* module, so the draws shift with what
#: else the session imported. 40 scenarios missed the snapshot chunk link in the full-suite
#: run; 100 leave a wide margin for the coverage assertion below.
STATEFUL_SCENARIOS: Final = 100
STATEFUL_STEP_COUNT: Final = 6
#: How long a watch call listens before the stream is cut (it never ends by itself).
WATCH_LISTEN_SECONDS: Final = 0.3

WATCH: Final = "GET /sync/watch"
PUSH_CREATE: Final = "POST /sync/push-sessions"
#: Operations whose 409 schema is ``oneOf: [ErrorResponse, <structured body>, ...]``.
STRUCTURED_409_OPERATIONS: Final = frozenset(
    {PUSH_CREATE, "POST /sync/push-sessions/{push_id}/commit", "POST /sync/snapshot-sessions"}
)

schema = schemathesis.openapi.from_dict(contract_with_links())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
#: The stateful runs walk the linked flows with valid data only (the fuzz covers the rest), so
#: their steps are spent deep in those flows rather than on 401s and unrelated operations. The
#: push and snapshot flows run as separate machines: every step picks among all operations of
#: its machine, and mixed together a successful commit (create -> chunk -> commit, three
#: particular steps in a row) was reached about once in 600 calls, so any change to the
#: harvested constants (see above) could lose it.
PUSH_FLOW_REGEX: Final = r"^/sync/(push-sessions|committed-bundles)"
SNAPSHOT_FLOW_REGEX: Final = r"^/sync/snapshot-sessions"


def _flow_schema(path_regex: str) -> Any:
    flow = schemathesis.openapi.from_dict(contract_with_links()).include(path_regex=path_regex)
    flow.config.generation.update(modes=[GenerationMode.POSITIVE])
    # Only the links declared in schemathesis_support: inferred ones (e.g. create -> commit
    # with the same push_id) would spend most steps on sessions that never got their rows.
    flow.config.phases.stateful.inference.algorithms = []
    return flow


push_flow_schema = _flow_schema(PUSH_FLOW_REGEX)
snapshot_flow_schema = _flow_schema(SNAPSHOT_FLOW_REGEX)

def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Use a valid body, or keep the generated one, for push create and chunk upload.

    The valid variant comes first: Hypothesis leans towards the first branch, and the stateful
    run needs create -> chunk -> commit to line up often enough to reach the commit.
    """
    operation = context.operation
    if operation is None or operation.method.upper() != "POST":
        return st.just(body)
    if operation.path == "/sync/push-sessions":
        # A fresh source's next bundle id is 1; one row matches the one-row chunk below.
        valid = st.just({"source_bundle_id": 1, "planned_row_count": 1})
        return st.one_of(valid, st.just(body))
    if operation.path == "/sync/push-sessions/{push_id}/chunks":
        # A new key commits; the seeded key is an INSERT conflict at commit. The new key is
        # drawn outside Hypothesis: its uuids repeat the same few values, and every repeat of a
        # committed key is an INSERT conflict too (commits were 2 successes to 19 conflicts).
        fresh_key = st.builds(lambda: str(uuid.uuid4()))
        key = st.one_of(fresh_key, st.just(SEEDED_KEY))
        valid_chunk = key.map(lambda k: {"start_row_ordinal": 0, "rows": [user_row(k)]})
        return st.one_of(valid_chunk, st.just(body))
    return st.just(body)


schema.hook(flatmap_body)
push_flow_schema.hook(flatmap_body)


@pytest.fixture
async def client(pg_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of the same app (:func:`build_app`'s plugin and JWT secret) on the test's
    own loop, for the plain HTTP tests below; its database is the test's own."""
    service = await make_service(pg_engine)
    app = Litestar(plugins=[OversyncPlugin(service, jwt=JWTConfig(key=SECRET))])
    async with app_client(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    with seeded_database(pg_server) as url:
        yield url


@pytest.fixture
def app(database_url: str) -> Litestar:
    """A new app per test item: Schemathesis ends the lifespan (and so the service) after each."""
    return build_app(database_url)


def _call_kwargs(case: Case, source: str) -> dict[str, Any]:
    # Valid credentials on every call so answers go beyond 401 (Schemathesis still sends its own
    # unauthenticated variants). A fresh source per call or scenario makes source_bundle_id 1
    # the next expected one, so push sessions can be created.
    kwargs: dict[str, Any] = {"headers": auth_headers(source=source)}
    if case.operation.label == WATCH:
        kwargs["timeout"] = WATCH_LISTEN_SECONDS
    return kwargs


def _openapi_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable: true`` becomes a ``null`` type."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _openapi_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True and "type" in node:
        converted["type"] = [node["type"], "null"]
    return converted


_COMPONENTS: Final = _openapi_to_json_schema(load_contract()["components"]["schemas"])


def _validator(name: str, *, optional: tuple[str, ...] = ()) -> Any:
    """A validator of one contract component; ``optional`` members are taken out of required."""
    component = dict(_COMPONENTS[name])
    component["required"] = [r for r in component.get("required", []) if r not in optional]
    return jsonschema_rs.validator_for({**component, "components": {"schemas": _COMPONENTS}})


_BUNDLE_CHANGE_EVENT: Final = _validator("BundleChangeEvent")
_STAGING_ORDINAL_OMITTED: Final = _validator(
    "PushSessionCreateStagingResponse", optional=("next_expected_row_ordinal",)
)
#: The structured 409 bodies, by error code.
_STRUCTURED_409: Final = {
    "push_conflict": _validator("PushConflictResponse"),
    "source_retired": _validator("SourceRetiredResponse"),
}


def _contract_defect(case: Case, response: Any) -> bool:
    """Whether the contract's response schema cannot describe this (correct) answer.

    Known defects of ``two_way_sync.yaml``, each recognised as narrowly as possible and checked
    by :func:`_check_contract_defect` against what the contract means instead:

    * the watch stream's body is ``schema: {type: string}``, which Schemathesis applies to each
      parsed SSE event (an object), so no stream can match; the events are checked against
      ``BundleChangeEvent`` instead;
    * ``PushSessionCreateStagingResponse`` requires ``next_expected_row_ordinal``, but the Go
      server omits it when it is 0, i.e. on every new session (``omitempty``, SERVER.md §11.21),
      and clients accept that. Only a staging answer without that one member is exempt;
    * the 409 answers of push create/commit and snapshot create are a ``oneOf`` of
      ``ErrorResponse`` and the structured bodies, but ``ErrorResponse`` allows extra members,
      so a ``push_conflict`` or ``source_retired`` body matches two branches and ``oneOf``
      fails (the contract means ``anyOf``). Such bodies are checked against their own schema.
    """
    label = case.operation.label
    if response.status_code == 409 and label in STRUCTURED_409_OPERATIONS:
        return response.json().get("error") in _STRUCTURED_409
    if response.status_code != 200:
        return False
    if label == WATCH:
        return True
    if label == PUSH_CREATE:
        body = response.json()
        return body.get("status") == "staging" and "next_expected_row_ordinal" not in body
    return False


def _check_contract_defect(case: Case, response: Any) -> None:
    """What the contract should have said about the answers :func:`_contract_defect` exempts."""
    if response.status_code == 409:
        body = response.json()
        _STRUCTURED_409[body["error"]].validate(body)
        return
    if case.operation.label == PUSH_CREATE:
        _STAGING_ORDINAL_OMITTED.validate(response.json())
        return
    # Watch: every complete SSE frame is a heartbeat comment or a bundle event.
    frames = [frame for frame in response.text.split("\n\n") if frame.strip()]
    for frame in frames:
        lines = frame.split("\n")
        if all(line.startswith(":") for line in lines):
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        assert fields["event"] == "bundle", frame
        _BUNDLE_CHANGE_EVENT.validate(json.loads(fields["data"]))


def _call_and_check(case: Case, app: Litestar, source: str) -> Any:
    kwargs = _call_kwargs(case, source)
    response = case.call(app=app, **kwargs)
    defect = _contract_defect(case, response)
    checks = [c for c in CHECKS if not (defect and c is response_schema_conformance)]
    case.validate_response(
        response, checks=checks, headers=kwargs["headers"], transport_kwargs={"app": app, **kwargs}
    )
    if defect:
        _check_contract_defect(case, response)
    return response


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_contract_fuzz(case: Case, app: Litestar) -> None:
    _call_and_check(case, app, fresh_source())


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        pytest.param(
            push_flow_schema,
            [
                ("POST /sync/push-sessions", 200),
                ("POST /sync/push-sessions/{push_id}/chunks", 200),
                ("POST /sync/push-sessions/{push_id}/commit", 200),
                ("GET /sync/committed-bundles/{bundle_seq}/rows", 200),
            ],
            id="push",
        ),
        pytest.param(
            snapshot_flow_schema,
            [
                ("POST /sync/snapshot-sessions", 200),
                ("GET /sync/snapshot-sessions/{snapshot_id}", 200),
            ],
            id="snapshot",
        ),
    ],
)
def test_contract_stateful(app: Litestar, flow: Any, expected: list[tuple[str, int]]) -> None:
    reached: set[tuple[str, int]] = set()
    machine_base = flow.as_state_machine()

    class Machine(machine_base):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            super().setup()
            self.source = fresh_source()

        def call(self, case: Case, **kwargs: Any) -> Any:
            response = _call_and_check(case, app, self.source)
            reached.add((case.operation.label, response.status_code))
            return response

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            """Already validated in :meth:`call`, with the checks of this module."""

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEP_COUNT,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
    # The links must actually have been followed to the deep, authenticated answers.
    for item in expected:
        assert item in reached, "\n".join(map(str, sorted(reached)))


# ------------------------------------------------------------------- served OpenAPI document

#: Status codes the served document lists beyond the contract: Go's health/status handlers do
#: answer ``500 health_failed`` / ``500 status_failed`` (SERVER.md §9.2); the contract omits them.
SERVED_EXTRA_STATUSES: Final = {
    ("/syncx/health", "get"): {"500"},
    ("/syncx/status", "get"): {"500"},
}
_METHODS: Final = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})


def _operations(document: dict[str, Any], prefixes: tuple[str, ...]) -> dict[Any, set[str]]:
    return {
        (path, method): set(operation["responses"])
        for path, item in document["paths"].items()
        if path.startswith(prefixes)
        for method, operation in item.items()
        if method in _METHODS
    }


async def test_served_openapi_matches_the_contract(client: httpx.AsyncClient) -> None:
    """Same paths, methods, status codes and schema names as ``two_way_sync.yaml``."""
    served = (await client.get("/schema/openapi.json")).json()
    contract = load_contract()

    served_ops = _operations(served, ("/sync/", "/syncx/"))
    contract_ops = _operations(contract, ("/sync/", "/syncx/"))
    assert set(served_ops) == set(contract_ops)
    for key, statuses in contract_ops.items():
        assert served_ops[key] == statuses | SERVED_EXTRA_STATUSES.get(key, set()), key

    assert set(served["components"]["schemas"]) == set(contract["components"]["schemas"])

    # Request bodies are documented with the contract's schemas (decoding stays Go's own).
    for path, name, required in [
        ("/sync/connect", "ConnectRequest", True),
        ("/sync/push-sessions", "PushSessionCreateRequest", True),
        ("/sync/push-sessions/{push_id}/chunks", "PushSessionChunkRequest", True),
        ("/sync/snapshot-sessions", "SnapshotSessionCreateRequest", False),
    ]:
        body = served["paths"][path]["post"]["requestBody"]
        assert body["required"] is required, path
        schema = body["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}, path

    create_200 = served["paths"]["/sync/push-sessions"]["post"]["responses"]["200"]
    assert create_200["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PushSessionCreateResponse"
    }
    assert served["components"]["schemas"]["PushSessionCreateResponse"]["oneOf"] == [
        {"$ref": "#/components/schemas/PushSessionCreateStagingResponse"},
        {"$ref": "#/components/schemas/PushSessionCreateAlreadyCommittedResponse"},
    ]
    watch_200 = served["paths"]["/sync/watch"]["get"]["responses"]["200"]["content"]
    assert list(watch_200) == ["text/event-stream"]


#: The source header the contract itself leaves out of two operations although the server
#: requires it there: ``/sync/pull`` declares ``parameters`` twice (YAML keeps the second list,
#: without the header) and ``DELETE /sync/push-sessions/{push_id}`` never lists it.
_SOURCE_HEADER: Final = ("Oversync-Source-ID", "header")
CONTRACT_MISSING_PARAMETERS: Final = {
    ("/sync/pull", "get"): {_SOURCE_HEADER},
    ("/sync/push-sessions/{push_id}", "delete"): {_SOURCE_HEADER},
}


def _parameters(document: dict[str, Any], operation: dict[str, Any]) -> dict[Any, Any]:
    """``{(name, in): (required, schema)}`` of an operation, ``$ref`` parameters resolved."""
    found = {}
    for parameter in operation.get("parameters", []):
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].split("/")[-1]]
        key = (parameter["name"], parameter["in"])
        found[key] = (parameter.get("required", False), parameter["schema"])
    return found


async def test_served_openapi_parameters_and_security_match_the_contract(
    client: httpx.AsyncClient,
) -> None:
    """Header, path and query parameters (name, location, required, schema) and the bearer
    security of every operation are those of ``two_way_sync.yaml``."""
    served = (await client.get("/schema/openapi.json")).json()
    contract = load_contract()
    for path, item in contract["paths"].items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            served_operation = served["paths"][path][method]
            served_params = _parameters(served, served_operation)
            expected = _parameters(contract, operation)
            for key in CONTRACT_MISSING_PARAMETERS.get((path, method), set()):
                expected[key] = served_params.get(key)
                assert expected[key] == (True, {"type": "string"}), (path, method, key)
            assert served_params == expected, (path, method)
            assert served_operation.get("security") == operation.get("security"), (path, method)
    schemes = contract["components"]["securitySchemes"]
    assert served["components"]["securitySchemes"] == schemes
    assert schemes == {"BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


async def test_documented_request_bodies_do_not_change_decoding(
    client: httpx.AsyncClient,
) -> None:
    """The documentation-only body dependency must never parse: Go-valid bodies that msgspec
    would refuse (top-level ``null``, trailing bytes) still decode as before (SERVER.md §11.26)."""
    bodies = [b"null", b'{"has_local_pending_rows": false} trailing']
    for n, body in enumerate(bodies):
        resp = await client.post("/sync/connect", content=body, headers=auth_headers(f"u{n}"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["resolution"] == "initialize_empty"


# ------------------------------------------------------------------ regressions of findings


async def test_committed_rows_cursor_at_int64_max_is_an_empty_page(
    client: httpx.AsyncClient,
) -> None:
    """Found by the fuzz: ``after_row_ordinal=9223372036854775807`` was a 500 (the storage
    ordinal ``after + 1`` overflowed the bigint parameter). Nothing follows that cursor."""
    await _http_push_one_row(client)
    resp = await client.get(
        "/sync/committed-bundles/1/rows",
        params={"after_row_ordinal": str(2**63 - 1)},
        headers=auth_headers(),
    )
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert page["rows"] == []
    assert page["has_more"] is False
    assert page["next_row_ordinal"] == 2**63 - 1


async def _http_push_one_row(client: httpx.AsyncClient) -> None:
    headers = auth_headers()
    connect = await client.post(
        "/sync/connect", json={"has_local_pending_rows": False}, headers=headers
    )
    assert connect.status_code == 200, connect.text
    create = await client.post(
        "/sync/push-sessions",
        json={"source_bundle_id": 1, "planned_row_count": 1},
        headers=headers,
    )
    push_id = create.json()["push_id"]
    chunk = await client.post(
        f"/sync/push-sessions/{push_id}/chunks",
        json={"start_row_ordinal": 0, "rows": [user_row(SEEDED_KEY)]},
        headers=headers,
    )
    assert chunk.status_code == 200, chunk.text
    commit = await client.post(f"/sync/push-sessions/{push_id}/commit", headers=headers)
    assert commit.status_code == 200, commit.text
