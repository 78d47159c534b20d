"""Validation of requests and responses against propolis-server's OpenAPI document (API 5.0.0).

Uses the pinned ``jsonschema`` with the fixes the API notes (§1.3) list, so that the checks are
those the real server's serde deserialisation makes:
- OpenAPI 3.0 ``nullable: true`` becomes ``anyOf [schema, {type: null}]``;
- ``SpecKey``'s ``oneOf [uuid string, any string]`` matches every string twice, so it is an ``anyOf``;
- the unit type (``{title: Null, type: string, enum: [null]}``, the NMI answer) is the JSON ``null``;
- ``format: uuid`` is enforced, and ``uint8/uint16/uint32/uint64/uint`` get their upper bounds
  (the document only says ``minimum: 0``; serde rejects an overflowing ``cpus: 300``).
"""

import copy
import json
import os
import re
import uuid

import jsonschema

DOCUMENT = os.path.join(os.path.dirname(__file__), "propolis", "propolis-server-5.0.0.openapi.json")

UINT_BOUNDS = {"uint8": 0xFF, "uint16": 0xFFFF, "uint32": 0xFFFFFFFF, "uint64": 0xFFFFFFFFFFFFFFFF,
               "uint": 0xFFFFFFFFFFFFFFFF}


def _format_checker():
    checker = jsonschema.FormatChecker()

    @checker.checks("uuid", raises=ValueError)
    def is_uuid(value):
        if not isinstance(value, str):
            return True
        uuid.UUID(value)
        return True

    for name, high in UINT_BOUNDS.items():
        checker.checks(name)(lambda value, high=high: not isinstance(value, int) or isinstance(value, bool) or 0 <= value <= high)
    return checker


def _fix(node):
    """The OpenAPI 3.0 schema ``node`` as JSON Schema 2020-12 (recursively)."""
    if isinstance(node, list):
        return [_fix(item) for item in node]
    if not isinstance(node, dict):
        return node
    fixed = {key: _fix(value) for key, value in node.items()}
    if fixed.get("enum") == [None] and fixed.get("type") == "string":  # schemars' unit "Null": the JSON value null
        fixed.pop("type")
    if fixed.pop("nullable", False):
        description = fixed.pop("description", None)
        fixed = {"anyOf": [fixed, {"type": "null"}]}
        if description:
            fixed["description"] = description
    return fixed


def _leaves(error):
    """The errors that explain ``error``: for a oneOf/anyOf miss, those of the branch that got furthest
    (the one whose tag matched, for propolis's tagged unions), recursively."""
    if not error.context:
        return [error]
    branches = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    best = max(branches.values(), key=lambda errs: min(len(e.absolute_path) for e in errs))
    return [leaf for sub in best for leaf in _leaves(sub)]


class ApiDocument:
    """The operations of the document: ``operation(method, path)`` and body/param/response checks."""

    def __init__(self, path=DOCUMENT):
        with open(path) as f:
            self.raw = json.load(f)
        self.version = self.raw["info"]["version"]
        schemas = _fix(copy.deepcopy(self.raw["components"]["schemas"]))
        spec_key = schemas["SpecKey"]
        spec_key["anyOf"] = spec_key.pop("oneOf")  # every string is a valid name; serde takes the first fit
        self.components = {"schemas": schemas, "responses": self.raw["components"]["responses"]}
        self.checker = _format_checker()
        self.routes = []
        for template, operations in self.raw["paths"].items():
            pattern = "^" + re.sub(r"\\{[^}]+\\}", "([^/]+)", re.escape(template)) + "$"
            self.routes.append((re.compile(pattern), template, operations))

    def route(self, path):
        """``(template, {method: operation})`` for a request path, or ``(None, None)``."""
        for pattern, template, operations in self.routes:
            if pattern.match(path):
                return template, operations
        return None, None

    def _validator(self, schema):
        root = dict(_fix(copy.deepcopy(schema)), components=self.components)
        return jsonschema.Draft202012Validator(root, format_checker=self.checker)

    def errors(self, schema, instance):
        """Messages (``<json path>: <problem>``) of every way ``instance`` breaks ``schema``."""
        found = []
        for error in sorted(self._validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path)):
            for leaf in _leaves(error):
                where = ".".join(str(p) for p in leaf.absolute_path) or "(body)"
                found.append("%s: %s" % (where, leaf.message[:300]))
        return found

    def request_body_schema(self, operation):
        body = operation.get("requestBody")
        if not body:
            return None, False
        return body["content"]["application/json"]["schema"], body.get("required", False)

    def query_errors(self, operation, query):
        """Problems with the query parameters (``{name: [values]}``, as ``parse_qs`` gives)."""
        problems = []
        for param in operation.get("parameters", []):
            if param["in"] != "query" or param["name"] not in query:
                continue
            values = query[param["name"]]
            value = values[-1]
            schema = param["schema"]
            if schema.get("type") == "integer":
                if not re.match(r"^[0-9]+$", value):
                    problems.append("%s: invalid digit found in string" % param["name"])
                    continue
                value = int(value)
            problems += ["%s: %s" % (param["name"], e.split(": ", 1)[1]) for e in self.errors(schema, value)]
        return problems

    def response_errors(self, operation, status, body, has_body=None):
        """Problems with a response: a status the operation does not declare, or a body off its schema."""
        responses = operation["responses"]
        spec = responses.get(str(status)) or responses.get("%dXX" % (status // 100))
        if spec is None:
            return ["status %d is not a documented response" % status]
        if "$ref" in spec:
            spec = self.components["responses"][spec["$ref"].rsplit("/", 1)[1]]
        content = spec.get("content")
        has_body = body is not None if has_body is None else has_body
        if not content:
            return ["status %d has no body in the document, but one was sent" % status] if has_body else []
        if not has_body:
            return ["status %d needs a JSON body" % status]
        return self.errors(content["application/json"]["schema"], body)
