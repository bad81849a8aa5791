"""The compiled (C) Avro codec: a parsed schema turned, once, into the program that the
extension `behest._cavro` interprets, and the choice between it and the generated Python.

The extension reads and writes exactly what the generated Python does (same objects,
same bytes, same errors) at a few times its speed. It is built when `pip install` finds a
C compiler (`setup.py`, optional); without one, or with `BEHEST_PURE_PYTHON=1` in the
environment, or when the built module is of another version, `load` returns None and
`behest.codec` keeps the generated Python (`behest.avro_reader`, `behest.avro_writer`).

A program is one nested tuple per schema node,
`(kind, path, check, lo, hi, names, children, expected, access)`: see `behest/_cavro.c`.
`checks` ("Record.field" → (check, lo, hi)) marks the fields whose values the fused
`decode_checked` tests on the way (`behest.record_checks.FIELD_CHECKS`). A program of
objects (`classes` given) writes the models' objects as `compile_object_writer` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from behest.avro_compile import Source as Schemas
from behest.errors import CodecError

__all__ = [
    "C_JSON",
    "C_NONE",
    "C_RANGE",
    "C_UUID",
    "PURE_PYTHON_ENV",
    "VERSION",
    "Program",
    "load",
    "micros",
    "program_spec",
    "unavailable_reason",
]

VERSION = 4
"""The `_cavro.VERSION` this module speaks to; another one is not used."""
PURE_PYTHON_ENV = "BEHEST_PURE_PYTHON"

_KINDS = ("null", "boolean", "int", "long", "float", "double", "bytes", "string", "enum",
          "record", "union")  # fmt: skip
KIND = {name: code for code, name in enumerate(_KINDS)}
C_NONE, C_RANGE, C_UUID, C_JSON = range(4)
_NO_CHECK = (C_NONE, 0, 0)

Spec = tuple[Any, ...]
Source = Callable[[Any], Any] | int | None
"""Where a program of objects takes a field: None, the attribute of the field's name; a
callable, applied to that attribute; an int, that extra argument of `encode`."""

try:
    from behest._cavro import Program, micros
except ImportError as error:  # no compiler at install time: the generated Python stays
    Program = None  # type: ignore[assignment,misc]
    micros = None  # type: ignore[assignment]
    _IMPORT_ERROR: str = f"the extension behest._cavro did not import ({error})"
else:
    _IMPORT_ERROR = ""


def unavailable_reason() -> str:
    """Why `load` returns None ('' when it does not)."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return f"{PURE_PYTHON_ENV} is set"
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    from behest import _cavro

    if _cavro.VERSION != VERSION:
        return f"behest._cavro is version {_cavro.VERSION}, behest needs {VERSION}: reinstall"
    return ""


def program_spec(
    schema: dict[str, Any],
    checks: Mapping[str, tuple[int, int, int]],
    classes: Mapping[str, type] | None = None,
    sources: Mapping[str, Source] | None = None,
) -> Spec:
    """The program of a parsed, logical-type-free schema (NotImplementedError for the
    types the generated Python does not support either). With `classes` (record full
    name → class), it writes objects: a union of records picks its branch by class, a
    record's fields come from `sources` ("Record.field" → `Source`, default None)."""
    src = _Compiler(schema, classes, sources or {}, checks)
    return src.node(schema, schema["name"], _NO_CHECK)


class _Compiler(Schemas):
    def __init__(
        self,
        schema: dict[str, Any],
        classes: Mapping[str, type] | None,
        sources: Mapping[str, Source],
        checks: Mapping[str, tuple[int, int, int]],
    ) -> None:
        super().__init__(schema)
        self.objects = classes
        self.sources = sources
        self.checks = checks

    def node(self, node: Any, path: str, check: tuple[int, int, int]) -> Spec:
        kind, definition = self.resolve(node)
        if kind == "record":
            return self.record(definition)
        if kind == "union":
            return self.union(definition, path, check)
        if kind not in KIND:
            raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")
        code, lo, hi = check
        if kind == "enum":
            symbols = tuple(definition["symbols"])
            expected = f"one of {', '.join(symbols)}"
            return (KIND[kind], path, code, lo, hi, symbols, None, expected, None)
        return (KIND[kind], path, code, lo, hi, None, None, None, None)

    def record(self, definition: dict[str, Any]) -> Spec:
        self.expanding.append(definition["name"])
        names, children, access = [], [], []
        for field in definition["fields"]:
            where = f"{definition['name']}.{field['name']}"
            names.append(field["name"])
            children.append(self.node(field["type"], where, self.checks.get(where, _NO_CHECK)))
            access.append(self.sources.get(where))
        self.expanding.pop()
        fields = tuple(access) if self.objects is not None else None
        path = definition["name"]
        return (KIND["record"], path, C_NONE, 0, 0, tuple(names), tuple(children), None, fields)

    def union(self, definition: list[Any], path: str, check: tuple[int, int, int]) -> Spec:
        branches = [self.resolve(branch) for branch in definition]
        if sum(k not in ("record", "null") for k, _ in branches) > 1:
            raise NotImplementedError(f"{path}: unions with several non-record branches")
        names = tuple(d["name"] if k == "record" else None for k, d in branches)
        records = [(index, name) for index, name in enumerate(names) if name is not None]
        specs = tuple(self.node(branch, path, check) for branch in definition)
        if self.objects is None:
            expected = f"a branch of {path}: " + ", ".join(name for _, name in records)
            return (KIND["union"], path, C_NONE, 0, 0, names, specs, expected, None)
        classes = {self.objects[name]: index for index, name in records}
        expected = "one of " + ", ".join(self.objects[name].__name__ for _, name in records)
        return (KIND["union"], path, C_NONE, 0, 0, names, specs, expected, classes)


def load(
    schema: dict[str, Any],
    checks: Mapping[str, tuple[int, int, int]] | None = None,
    json_fits: Callable[[str], bool] | None = None,
    slow_check: Callable[[Any], None] | None = None,
    classes: Mapping[str, type] | None = None,
    sources: Mapping[str, Source] | None = None,
    uuid_text: Callable[[Any], str] | None = None,
    header: bytes | None = None,
) -> Program | None:
    """The compiled program of `schema`, or None when the generated Python must do
    (`unavailable_reason` says why). `decode_checked` applies `checks`, asks `json_fits`
    about JSON text, and hands a record that fails a check to `slow_check`, which raises
    the error (or lets it pass: the fast checks are strict, e.g. only lowercase UUIDs).
    `classes` and `sources`: a program of objects (see `program_spec`); a field whose
    source is `uuid_text` and whose value is a `uuid.UUID` is written as its canonical
    text by C (what `uuid_text` must return), anything else by calling `uuid_text`.
    `header`: the bytes `decode_event` expects before the value."""
    if unavailable_reason():
        return None
    spec = program_spec(schema, checks or {}, classes, sources)
    return Program(spec, CodecError, json_fits, slow_check, uuid_text, header)
