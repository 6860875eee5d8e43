"""OpenAPI schemas of the wire Structs, shaped like ``two_way_sync.yaml``.

* :class:`RawJSONSchemaPlugin`: payloads and conflict rows are passed through as
  ``msgspec.Raw`` and default to an empty ``Raw``. Litestar's own Struct schema plugin cannot
  describe such fields (it hashes every default), so these Structs are described here: same
  component names and members, a raw member is "any JSON value", and a raw default is simply
  not advertised.
* :class:`ContractSchemaPlugin`: where the Python types are shaped differently from the
  contract's schemas, the contract's shape is advertised. The wire enums and the feature flags
  are inline (the contract has no components for them), and ``PushSessionCreateResponse`` is the
  contract's ``oneOf`` of its two variants, which Go (and :mod:`oversync_sa.wire.models`) encode
  with one struct.

Only the served document changes; encoding and decoding never see these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import msgspec
from litestar.enums import ParamType
from litestar.openapi.spec import (
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.plugins import OpenAPISchemaPlugin
from litestar.types import Empty
from litestar.typing import FieldDefinition

from oversync_sa.wire import models

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

__all__ = [
    "BEARER_AUTH",
    "BEARER_AUTH_SCHEME",
    "BundleHash",
    "ContractSchemaPlugin",
    "OptionalBodyOperation",
    "PushSessionCreateAlreadyCommittedResponse",
    "PushSessionCreateStagingResponse",
    "RawJSONSchemaPlugin",
    "SyncKey",
    "SyncOperation",
]


def _has_raw_default(value: Any) -> bool:
    if not (isinstance(value, type) and issubclass(value, msgspec.Struct)):
        return False
    return any(isinstance(f.default, msgspec.Raw) for f in msgspec.structs.fields(value))


class RawJSONSchemaPlugin(OpenAPISchemaPlugin):
    """Describes ``msgspec.Raw`` as any JSON, and Structs whose defaults are ``Raw``."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is msgspec.Raw or _has_raw_default(value)

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        if field_definition.type_ is msgspec.Raw:
            return Schema(description="Any JSON value, passed through unchanged")
        return _struct_schema(field_definition, schema_creator)


def _struct_schema(field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
    """The component schema of a wire Struct; ``key``/``bundle_hash`` use the contract's names."""
    struct_type = field_definition.type_
    hints = field_definition.get_type_hints(include_extras=True, resolve_generics=True)
    fields = msgspec.structs.fields(struct_type)
    properties = {
        f.encode_name: FieldDefinition.from_annotation(
            annotation=_CONTRACT_FIELD_TYPES.get((f.encode_name, hints[f.name]), hints[f.name]),
            name=f.encode_name,
            default=_advertised_default(f.default),
        )
        for f in fields
    }
    required = sorted(
        f.encode_name
        for f in fields
        if f.required and not FieldDefinition.from_annotation(hints[f.name]).is_optional
    )
    return schema_creator.create_component_schema(
        field_definition, required=required, property_fields=properties
    )


def _advertised_default(default: Any) -> Any:
    if default is msgspec.NODEFAULT or default is msgspec.UNSET:
        return Empty
    if isinstance(default, msgspec.Raw):
        return Empty
    return default


# ------------------------------------------------------------------- contract-shaped schemas


class PushSessionCreateStagingResponse(msgspec.Struct, kw_only=True):
    """Documentation only: the ``staging`` variant of ``PushSessionCreateResponse``.

    ``next_expected_row_ordinal`` is omitted when it is 0, i.e. on every new session (Go's
    ``omitempty``); the contract lists it as required.
    """

    push_id: str
    status: Literal["staging"]
    planned_row_count: int
    next_expected_row_ordinal: int = 0


class PushSessionCreateAlreadyCommittedResponse(msgspec.Struct, kw_only=True):
    """Documentation only: the ``already_committed`` variant of ``PushSessionCreateResponse``."""

    status: Literal["already_committed"]
    bundle_seq: int
    source_id: str
    source_bundle_id: int
    row_count: int
    bundle_hash: str


_CREATE_VARIANTS: Final = (
    PushSessionCreateStagingResponse,
    PushSessionCreateAlreadyCommittedResponse,
)


class SyncKey:
    """Documentation only: the contract's ``SyncKey`` component (``{"<key column>": "<text>"}``)."""


class BundleHash:
    """Documentation only: the contract's ``BundleHash`` component (lowercase hex SHA-256)."""


#: Struct members advertised with the contract's named schemas: (wire name, Python type) ->
#: documentation type.
_CONTRACT_FIELD_TYPES: Final[dict[tuple[str, Any], Any]] = {
    ("key", models.SyncKey): SyncKey,
    ("bundle_hash", str): BundleHash,
}


def _is_wire_enum(value: Any) -> bool:
    return (
        isinstance(value, type)
        and issubclass(value, enum.StrEnum)
        and value.__module__.startswith("oversync_sa.wire.")
    )


def _has_contract_field(value: Any) -> bool:
    if not (isinstance(value, type) and issubclass(value, msgspec.Struct)):
        return False
    if value.__module__ != models.__name__ and value not in _CREATE_VARIANTS:
        return False
    return any(f.encode_name in ("key", "bundle_hash") for f in msgspec.structs.fields(value))


class ContractSchemaPlugin(OpenAPISchemaPlugin):
    """Advertises the contract's shape for the wire types whose Python shape differs."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return (
            value is models.PushSessionCreateResponse
            or value is models.SyncFeatures
            or value is SyncKey
            or value is BundleHash
            or _is_wire_enum(value)
            or _has_contract_field(value)
        )

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        value = field_definition.type_
        if _is_wire_enum(value):
            # Inline, as in the contract: ``type: string, enum: [...]``.
            return Schema(type=OpenAPIType.STRING, enum=[member.value for member in value])
        if value is models.SyncFeatures:
            # The contract's ``features``: an open object of flags.
            return Schema(
                type=OpenAPIType.OBJECT,
                additional_properties=Schema(type=OpenAPIType.BOOLEAN),
                description="Feature flags of the sync protocol.",
            )
        if value is SyncKey or value is BundleHash:
            schema = schema_creator.schema_registry.get_schema_for_field_definition(
                field_definition
            )
            if value is SyncKey:
                schema.type = OpenAPIType.OBJECT
                schema.additional_properties = Schema(type=OpenAPIType.STRING)
                schema.description = "Structured sync key; key values are strings on the wire."
            else:
                schema.type = OpenAPIType.STRING
                schema.description = (
                    "Lowercase hex SHA-256 of the committed row stream (Go-canonical JSON)."
                )
            return _reference(field_definition, schema_creator)
        if value is not models.PushSessionCreateResponse:
            return _struct_schema(field_definition, schema_creator)
        # PushSessionCreateResponse: a named component that is a oneOf of the two variants.
        schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        variants: list[Schema | Reference] = [
            schema_creator.for_field_definition(FieldDefinition.from_annotation(variant))
            for variant in _CREATE_VARIANTS
        ]
        schema.one_of = variants
        return _reference(field_definition, schema_creator)


def _reference(field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
    """The ``$ref`` of a component just registered by hand.

    Litestar only turns a plugin's *object* schema with a title into a reference, so the first
    use of these components would otherwise be inlined. Its ``for_plugin`` passes a returned
    ``Reference`` through unchanged; the protocol merely annotates the return as ``Schema``.
    """
    reference = schema_creator.schema_registry.get_reference_for_field_definition(field_definition)
    assert reference is not None, "registered just before"
    return cast("Schema", reference)


# ------------------------------------------------------------ parameters and security scheme

#: The contract's security scheme name and definition (``components.securitySchemes``).
BEARER_AUTH: Final = "BearerAuth"
BEARER_AUTH_SCHEME: Final = SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")

# Litestar's format enum has no ``int64``; the document is plain JSON, so the text serves.
_INT64: Final = cast("OpenAPIFormat", "int64")

_SOURCE_ID_PARAMETER: Final = Parameter(
    name="Oversync-Source-ID",
    param_in=ParamType.HEADER,
    required=True,
    schema=Schema(type=OpenAPIType.STRING),
    description=(
        "Current sync source identity of the authenticated request; sync transport metadata, "
        "not authentication."
    ),
)


def _int_query(
    name: str,
    description: str,
    *,
    minimum: int,
    maximum: int | None = None,
    default: int | None = None,
    int64: bool = True,
) -> Parameter:
    return Parameter(
        name=name,
        param_in=ParamType.QUERY,
        required=False,
        description=description,
        schema=Schema(
            type=OpenAPIType.INTEGER,
            format=_INT64 if int64 else None,
            minimum=minimum,
            maximum=maximum,
            default=default,
        ),
    )


_AFTER_BUNDLE_SEQ: Final = _int_query(
    "after_bundle_seq", "Bundles strictly after this durable checkpoint.", minimum=0, default=0
)
_PAGE_AFTER_ROW: Final = _int_query(
    "after_row_ordinal", "Rows strictly after this row ordinal.", minimum=0, default=0
)
_PAGE_MAX_ROWS: Final = _int_query(
    "max_rows",
    "Requested page size: default 1000, capped at 5000, non-positive values are rejected.",
    minimum=1,
    maximum=5000,
    default=1000,
    int64=False,
)

#: Query parameters by operation id. The handlers read queries raw (Go's integer rules and
#: error codes, :mod:`.query`), so Litestar sees none of them: they are documented here.
_QUERY_PARAMETERS: Final[dict[str, tuple[Parameter, ...]]] = {
    # The contract advertises no default cursor here (it is 0, as for snapshot chunks).
    "getCommittedBundleRows": (
        _int_query("after_row_ordinal", "Rows strictly after this row ordinal.", minimum=0),
        _PAGE_MAX_ROWS,
    ),
    "pull": (
        _AFTER_BUNDLE_SEQ,
        _int_query(
            "max_bundles",
            "Maximum number of complete bundles to return.",
            minimum=1,
            maximum=5000,
            default=1000,
            int64=False,
        ),
        _int_query(
            "target_bundle_seq",
            "Frozen stable ceiling captured from the first response of a pull session.",
            minimum=0,
        ),
    ),
    "watchBundleChanges": (_AFTER_BUNDLE_SEQ,),
    "getSnapshotChunk": (_PAGE_AFTER_ROW, _PAGE_MAX_ROWS),
}

#: Path parameters taken as text (so a bad value is the contract's 400, not a routing error)
#: but documented with the contract's type.
_PATH_SCHEMAS: Final[dict[str, Schema]] = {
    "bundle_seq": Schema(type=OpenAPIType.INTEGER, format=_INT64, minimum=1),
}


@dataclass
class SyncOperation(Operation):
    """An authenticated ``/sync`` operation as the contract documents it.

    Adds the ``Oversync-Source-ID`` header and the operation's query parameters, and gives
    text-typed path parameters their contract type. Only the served document changes.
    """

    def __post_init__(self) -> None:
        parameters: list[Parameter | Reference] = [_SOURCE_ID_PARAMETER]
        for parameter in self.parameters or ():
            if isinstance(parameter, Parameter) and parameter.name in _PATH_SCHEMAS:
                parameter.schema = _PATH_SCHEMAS[parameter.name]
            parameters.append(parameter)
        parameters.extend(_QUERY_PARAMETERS.get(self.operation_id or "", ()))
        self.parameters = parameters


@dataclass
class OptionalBodyOperation(SyncOperation):
    """A sync operation whose documented request body is optional.

    Litestar marks every request body it documents as required; ``POST
    /sync/snapshot-sessions`` accepts an empty body (keep the current source).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
