"""Can a reader schema read what a writer schema wrote? Avro's resolution rules, statically.

A writer schema behest did not ship (a newer version published by a producer on the
`<topic>.schemas` topic) is accepted only when the current schema can read everything it
may write: the rules of the Avro specification's "Schema Resolution" section, checked for
every branch and symbol up front, so an incompatible schema is refused with a reason
instead of failing on some record later. Logical types do not change the binary form and
are ignored. The tests compare the verdicts with the Apache `avro` package's checker.
"""

from __future__ import annotations

from typing import Any

__all__ = ["incompatibilities"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
"""Writer type → the reader types it is promoted to."""


def incompatibilities(writer: Any, reader: Any) -> list[str]:
    """Why data written with `writer` cannot be read as `reader`; empty when it can.

    Both are schemas as `fastavro.parse_schema` returns them (named types referenced by
    their full names, defined once in `__named_schemas`).
    """
    return _Check(writer, reader).run()


class _Check:
    def __init__(self, writer: Any, reader: Any) -> None:
        self.writer = writer
        self.reader = reader
        self.writer_names: dict[str, Any] = _named(writer)
        self.reader_names: dict[str, Any] = _named(reader)
        self.problems: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    def run(self) -> list[str]:
        self.check(self.writer, self.reader, _name_of(self.reader) or "schema")
        return self.problems

    def resolve(self, node: Any, names: dict[str, Any]) -> Any:
        while isinstance(node, str) and node not in _PRIMITIVES:
            found = names.get(node)
            if found is None:
                return node
            node = found
        if isinstance(node, dict) and node.get("type") in _PRIMITIVES:
            return node["type"]  # {"type": "string", "logicalType": ...}
        return node

    def check(self, writer: Any, reader: Any, path: str) -> None:
        w = self.resolve(writer, self.writer_names)
        r = self.resolve(reader, self.reader_names)
        if isinstance(w, list):  # every branch the writer may choose must be readable
            for branch in w:
                if isinstance(r, list):
                    self.union_branch(branch, r, path)
                else:
                    self.check(branch, r, path)
            return
        if isinstance(r, list):
            self.union_branch(w, r, path)
            return
        if not self.matches(w, r):
            self.problems.append(f"{path}: a {_kind(w)} cannot be read as a {_kind(r)}")
            return
        if isinstance(w, dict):
            self.complex(w, r, path)

    def union_branch(self, branch: Any, union: list[Any], path: str) -> None:
        """A writer branch resolves to the first reader branch that matches it."""
        w = self.resolve(branch, self.writer_names)
        for candidate in union:
            r = self.resolve(candidate, self.reader_names)
            if self.matches(w, r):
                if isinstance(w, dict):
                    self.complex(w, r, path)
                return
        self.problems.append(
            f"{path}: the writer's {_kind(w)} branch has no match in the reader's union"
        )

    def matches(self, w: Any, r: Any) -> bool:
        """The spec's "match": same primitive or a promotion, same kind and name otherwise."""
        if isinstance(w, str) or isinstance(r, str):
            return (
                isinstance(w, str)
                and isinstance(r, str)
                and (w == r or r in _PROMOTIONS.get(w, ()))
            )
        if w["type"] != r["type"]:
            return False
        if w["type"] in ("record", "enum", "fixed", "error"):
            return _same_name(w, r)
        return True

    def complex(self, w: dict[str, Any], r: dict[str, Any], path: str) -> None:
        kind = w["type"]
        if kind in ("record", "error"):
            pair = (w["name"], r["name"])
            if pair in self.seen:  # a recursive type: already being checked
                return
            self.seen.add(pair)
            written = {f["name"]: f for f in w["fields"]}
            for field in r["fields"]:
                names = [field["name"], *field.get("aliases", ())]
                source = next((written[n] for n in names if n in written), None)
                where = f"{_short(r['name'])}.{field['name']}"
                if source is not None:
                    self.check(source["type"], field["type"], where)
                elif "default" not in field:
                    self.problems.append(
                        f"{where}: the reader's field is not written and has no default"
                    )
        elif kind == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                self.problems.append(
                    f"{path}: enum {_short(r['name'])} lacks the writer's symbols {missing}"
                )
        elif kind == "fixed":
            if w["size"] != r["size"]:
                self.problems.append(
                    f"{path}: fixed size {w['size']} cannot be read as {r['size']}"
                )
        elif kind == "array":
            self.check(w["items"], r["items"], f"{path}[]")
        elif kind == "map":
            self.check(w["values"], r["values"], f"{path}{{}}")


def _named(schema: Any) -> dict[str, Any]:
    return schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}


def _name_of(schema: Any) -> str | None:
    return schema.get("name") if isinstance(schema, dict) else None


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _same_name(w: dict[str, Any], r: dict[str, Any]) -> bool:
    aliases = {_short(a) for a in r.get("aliases", ())}
    return _short(w["name"]) == _short(r["name"]) or _short(w["name"]) in aliases


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    name = node.get("name")
    return f"{node['type']} {_short(name)}" if name else str(node["type"])
