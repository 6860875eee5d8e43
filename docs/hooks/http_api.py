"""mkdocs hook: render the OpenAPI contract ``docs/api/two_way_sync.yaml`` as a markdown page.

The page ``api/http.md`` holds only the :data:`MARKER`; the hook replaces it at build time,
so the HTTP reference is always the contract itself and cannot drift from it. :func:`render`
is plain Python (tested in ``tests/docs``) and can also be run by hand:
``python docs/hooks/http_api.py > /tmp/http.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MARKER = "<!-- http-api: generated from docs/api/two_way_sync.yaml -->"
SPEC = Path(__file__).resolve().parents[1] / "api" / "two_way_sync.yaml"
_METHODS = ("get", "post", "put", "patch", "delete")


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or "paths" not in spec:
        raise ValueError(f"{path} is not an OpenAPI document")
    return spec


def _cell(text: object) -> str:
    """One markdown table cell: single line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _anchor(name: str) -> str:
    return f"schema-{name.lower()}"


def _type(schema: Mapping[str, Any]) -> str:
    """A short human type: links for references, ``array of X``, ``X | Y`` for oneOf."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[`{name}`](#{_anchor(name)})"
    if "oneOf" in schema:
        return " \\| ".join(_type(s) for s in schema["oneOf"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"map of {_type(schema['additionalProperties'])}"
    detail = [str(schema["format"])] if "format" in schema else []
    if "enum" in schema:
        detail.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    return f"{kind} ({'; '.join(detail)})" if detail else kind


def _constraints(schema: Mapping[str, Any]) -> str:
    bits = [
        f"{label} {schema[key]}"
        for key, label in (("minimum", "min"), ("maximum", "max"), ("default", "default"))
        if key in schema
    ]
    return "; ".join(bits)


def _resolve_parameter(spec: Mapping[str, Any], param: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$ref" in param:
        resolved: Mapping[str, Any] = spec["components"]["parameters"][_ref_name(param["$ref"])]
        return resolved
    return param


def _json_schema(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    content = entry.get("content") or {}
    for media in content.values():
        if isinstance(media, Mapping) and "schema" in media:
            schema: Mapping[str, Any] = media["schema"]
            return schema
    return None


def _operation(spec: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]) -> str:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [str(op["description"]).strip(), ""]
    lines += [
        "Authentication: " + ("bearer token" if op.get("security") else "none"),
        "",
    ]
    params = [_resolve_parameter(spec, p) for p in op.get("parameters", [])]
    if params:
        lines += ["| Parameter | In | Type | Required | Description |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            extra = _constraints(schema)
            description = _cell(p.get("description", ""))
            if extra:
                description = f"{description} ({extra})".strip()
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_type(schema)} | "
                f"{'yes' if p.get('required') else 'no'} | {description} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        schema = _json_schema(body)
        if schema is not None:
            lines += [f"Request body: {_type(schema)}", ""]
    lines += ["| Status | Meaning | Body |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        schema = _json_schema(response)
        lines.append(
            f"| {status} | {_cell(response.get('description', ''))} | "
            f"{_type(schema) if schema is not None else ''} |"
        )
    return "\n".join(lines) + "\n"


def _schema(name: str, schema: Mapping[str, Any]) -> str:
    lines = [f"### `{name}` {{#{_anchor(name)}}}", ""]
    if schema.get("description"):
        lines += [str(schema["description"]).strip(), ""]
    properties: Mapping[str, Any] = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| Member | Type | Required | Description |", "|---|---|---|---|"]
        for member, sub in properties.items():
            description = _cell(sub.get("description", ""))
            extra = _constraints(sub)
            if extra:
                description = f"{description} ({extra})".strip()
            lines.append(
                f"| `{member}` | {_type(sub)} | {'yes' if member in required else 'no'} | "
                f"{description} |"
            )
    else:
        lines.append(f"Type: {_type(schema)}")
    return "\n".join(lines) + "\n"


def render(spec: Mapping[str, Any]) -> str:
    """The whole reference: every operation of every path, then every component schema."""
    info = spec.get("info", {})
    parts = [
        f"*{info.get('title', 'API')}*, contract version {info.get('version', '?')}.",
        "",
        str(info.get("description", "")).strip(),
        "",
        "## Operations",
        "",
    ]
    for path, item in spec["paths"].items():
        for method in _METHODS:
            if method in item:
                parts.append(_operation(spec, method, path, item[method]))
    parts += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        parts.append(_schema(name, schema))
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs event: expand the marker wherever a page contains it."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(load_spec()))


if __name__ == "__main__":
    sys.stdout.write(render(load_spec()))
