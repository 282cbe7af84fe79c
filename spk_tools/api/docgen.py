"""docs/api.md, generated from the API's OpenAPI document.

``python -m spk_tools.api.docgen docs/api.md`` rewrites it (no argument:
standard output). The prose before the routes is intro.md, the routes and
schemas come from the OpenAPI document that ``spk serve --openapi``
prints, so the page cannot drift from the server: a test
(tests/test_api_server.py) fails when the file differs from what this
module generates.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from spk_tools.api.app import openapi_document

#: The prose before the routes (package data beside this module).
INTRO = Path(__file__).with_name("intro.md")


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short type: ``int``, ``str | null``, ``list[Window]``, ``"cold" | "warm"``."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " \\| ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"dict[str, {_type(extra)}]" if isinstance(extra, dict) and extra else "object"
    names = {"integer": "int", "string": "str", "number": "float", "boolean": "bool", "null": "null"}
    return names.get(str(kind), str(kind or "any"))


def _fields(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    for name, field in schema.get("properties", {}).items():
        default = f" (default `{field['default']}`)" if "default" in field and field["default"] is not None else ""
        description = str(field.get("description", "")).replace("|", "\\|") + default
        rows.append(f"| `{name}` | {_type(field)} | {'yes' if name in required else 'no'} | {description} |")
    return rows


def _routes(document: dict[str, Any]) -> list[str]:
    lines = ["## Routes", "", "| method | path | role | what |", "| --- | --- | --- | --- |"]
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    for path, method, op in operations:
        lines.append(f"| `{method.upper()}` | `{path}` | {', '.join(op['tags'])} | {op['summary']} |")
    for path, method, op in operations:
        lines += ["", f"### `{method.upper()} {path}`", "", f"{op['summary']}.", "",
                  f"- role: `{', '.join(op['tags'])}`"]  # fmt: skip
        params = [p for p in op.get("parameters", []) if p["in"] != "header"]
        for p in params:
            description = p.get("description") or ("the partition's name" if p["name"] == "name" else "")
            lines.append(f"- parameter `{p['name']}` ({p['in']}): {description}")
        body = op.get("requestBody")
        if body is not None:
            schema = body["content"]["application/json"]["schema"]
            required = "" if body.get("required") else " (optional)"
            lines.append(f"- body{required}: {_type(schema)}")
        for status, answer in op["responses"].items():
            if not status.startswith("2"):
                continue
            content = answer.get("content", {})
            kind = next(iter(content), "")
            schema = content.get(kind, {}).get("schema", {})
            shape = _type(schema) if schema and kind == "application/json" else f"`{kind}`" if kind else "empty"
            lines.append(f"- answer `{status}`: {shape}")
        lines.append("- errors: the [error shape](#errors)")
    return lines


def _schemas(document: dict[str, Any]) -> list[str]:
    lines = ["", "## Schemas", ""]
    for name, schema in sorted(document["components"]["schemas"].items()):
        if name in ("HTTPValidationError", "ValidationError"):
            continue
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [str(schema["description"]).strip(), ""]
        lines += [*_fields(schema), ""]
    return lines


def render() -> str:
    """The whole of docs/api.md."""
    document = openapi_document()
    return INTRO.read_text() + "\n" + "\n".join(_routes(document) + _schemas(document)).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
