"""OpenAPI schemas of the wire Structs that carry raw JSON (``msgspec.Raw``) members.

Payloads and conflict rows are passed through as ``msgspec.Raw`` and default to an empty
``Raw``. Litestar's own Struct schema plugin cannot describe such fields (it hashes every
default), so these Structs are described here: same component names and members, a raw member
is "any JSON value", and a raw default is simply not advertised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar.openapi.spec import Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.types import Empty
from litestar.typing import FieldDefinition

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

__all__ = ["RawJSONSchemaPlugin"]


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
        struct_type = field_definition.type_
        if struct_type is msgspec.Raw:
            return Schema(description="Any JSON value, passed through unchanged")
        hints = field_definition.get_type_hints(include_extras=True, resolve_generics=True)
        fields = msgspec.structs.fields(struct_type)
        properties = {
            f.encode_name: FieldDefinition.from_annotation(
                annotation=hints[f.name],
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
