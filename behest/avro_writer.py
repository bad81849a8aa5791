"""Compiled Avro writers: a schema turned, once, into one straight-line Python function.

`compile_writer` writes plain records (dicts, `(name, fields)` tuples for unions of
records); `compile_object_writer` writes the models' objects directly, the producers' path
from an `AgentEvent` to bytes. A value the schema does not allow raises CodecError naming
the field, or the error of its own `encode`/`pack` (the callers translate those). How the
code is generated: `behest.avro_compile`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from behest.avro_compile import EIGHT_BYTES, GATHER, Source, emit_tree
from behest.errors import CodecError

__all__ = ["compile_object_writer", "compile_writer"]

(_G1, _H1, _), (_G2, _H2, _), (_G3, _H3, _) = GATHER
# Defined here, not imported: CPython compiles `name.method()` on an imported name to an
# attribute load that makes a bound method on every call (`_U64` in the varint helpers).
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _put_varint(out: bytearray, zigzag: int, value: int, bits: int, path: str) -> None:
    """Append a zigzag-encoded value of at least one byte, after checking its range."""
    if not 0 <= zigzag < 1 << bits:
        raise CodecError(f"{path} = {value} does not fit an Avro {bits}-bit integer")
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)


def _put_long(out: bytearray, zigzag: int, value: int, path: str) -> None:
    """`_put_varint` of a long, with fast paths for two bytes (sequences) and eight (every
    timestamp-micros between 1978 and 3111: the 7-bit groups spread apart in three steps,
    `_GATHER` backwards, and written at once)."""
    if 0 <= zigzag < 1 << 14:
        out.append((zigzag & 0x7F) | 0x80)
        out.append(zigzag >> 7)
    elif 1 << 49 <= zigzag < 1 << 56:
        word = (zigzag & _G3) | ((zigzag & _H3) << 4)
        word = (word & _G2) | ((word & _H2) << 2)
        word = (word & _G1) | ((word & _H1) << 1)
        out += _U64.pack(word | EIGHT_BYTES)
    else:
        _put_varint(out, zigzag, value, 64, path)


def _not_a(expected: str, value: Any, path: str) -> None:
    raise CodecError(f"{path} must be {expected}, not {type(value).__name__} {value!r:.80}")


_WRITE_HELPERS = {
    "_put_varint": _put_varint,
    "_put_long": _put_long,
    "_U64": _U64,
    "_not_a": _not_a,
    "_FLOAT": _FLOAT,
    "_DOUBLE": _DOUBLE,
}


def _emit_write_long(src: Source, value: str, ind: int, bits: int, path: str) -> None:
    src.add(
        ind,
        f"z = ({value} << 1) ^ ({value} >> {bits - 1})",
        "if 0 <= z < 128:",
        "    out.append(z)",
        "elif 128 <= z < 16384:",
        "    out.append((z & 0x7F) | 0x80)",
        "    out.append(z >> 7)",
    )
    if bits == 64:  # eight bytes inline: every timestamp-micros between 1978 and 3111
        src.add(
            ind,
            f"elif {1 << 49} <= z < {1 << 56}:",
            f"    z = (z & {_G3:#x}) | ((z & {_H3:#x}) << 4)",
            f"    z = (z & {_G2:#x}) | ((z & {_H2:#x}) << 2)",
            f"    z = (z & {_G1:#x}) | ((z & {_H1:#x}) << 1)",
            f"    out += _U64.pack(z | {EIGHT_BYTES:#x})",
        )
    src.add(
        ind,
        "else:",
        f"    _put_long(out, z, {value}, {path!r})"
        if bits == 64
        else f"    _put_varint(out, z, {value}, {bits}, {path!r})",
    )


def _emit_write(src: Source, node: Any, value: str, ind: int, path: str) -> None:
    kind, node = src.resolve(node)
    if kind in ("int", "long"):
        _emit_write_long(src, value, ind, 32 if kind == "int" else 64, path)
    elif kind in ("string", "bytes"):
        data = src.local()
        if kind == "string":
            src.add(ind, f"{data} = {value}.encode()")
        else:
            src.add(
                ind,
                f"if not isinstance({value}, (bytes, bytearray)):",
                f"    _not_a('bytes', {value}, {path!r})",
                f"{data} = {value}",
            )
        src.add(
            ind,
            f"n = len({data})",
            "if n < 64:",
            "    out.append(n << 1)",
            "else:",
            f"    _put_varint(out, n << 1, n, 64, {path!r})",
            f"out += {data}",
        )
    elif kind == "null":
        src.add(ind, f"if {value} is not None:", f"    _not_a('None', {value}, {path!r})")
    elif kind == "boolean":
        src.add(
            ind,
            f"if {value} is True:",
            "    out.append(1)",
            f"elif {value} is False:",
            "    out.append(0)",
            "else:",
            f"    _not_a('a bool', {value}, {path!r})",
        )
    elif kind in ("float", "double"):
        src.add(ind, f"out += {'_FLOAT' if kind == 'float' else '_DOUBLE'}.pack({value})")
    elif kind == "enum":
        indexes = src.constant({symbol: i for i, symbol in enumerate(node["symbols"])})
        src.add(
            ind,
            f"i = {indexes}.get({value})",
            "if i is None:",
            f"    _not_a('one of {', '.join(node['symbols'])}', {value}, {path!r})",
        )
        _emit_write_long(src, "i", ind, 64, path)
    elif kind == "record":
        src.expanding.append(node["name"])
        for field in node["fields"]:
            local, where = src.local(), f"{node['name']}.{field['name']}"
            if src.classes is None:
                src.add(ind, f"{local} = {value}[{field['name']!r}]")
            else:
                src.add(
                    ind,
                    f"{local} = " + src.fields.get(where, "{0}.{1}").format(value, field["name"]),
                )
            _emit_write(src, field["type"], local, ind, where)
        src.expanding.pop()
    elif kind == "union":
        _emit_write_union(src, node, value, ind, path)
    else:
        raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")


def _emit_record_branches(
    src: Source, definitions: dict[int, Any], value: str, ind: int, path: str
) -> None:
    """Dispatch on the branch index `i` (bisection): write the index, then `value` as that
    branch's record."""

    def branch(index: int, at: int) -> None:
        src.add(at, f"out.append({index << 1})")
        _emit_write(src, definitions[index], value, at, path)

    emit_tree(src, "i", sorted(definitions), ind, branch)


def _emit_write_union(src: Source, branches: list[Any], value: str, ind: int, path: str) -> None:
    """A record branch is chosen by the name in a `(name, fields)` tuple, the null branch
    by None, and the one other branch (if any) by anything else."""
    records, plain = [], []
    for index, branch in enumerate(branches):
        kind, definition = src.resolve(branch)
        if kind == "record":
            records.append((index, definition))
        else:
            plain.append((index, kind, branch))
    null = [entry for entry in plain if entry[1] == "null"]
    other = [entry for entry in plain if entry[1] != "null"]
    if len(other) > 1:
        raise NotImplementedError(f"{path}: unions with several non-record branches")
    keyword = "if"
    if records and src.classes is not None:  # objects: the branch is the object's class
        classes = src.constant({src.classes[d["name"]]: index for index, d in records})
        src.add(ind, f"i = {classes}.get(type({value}))", "if i is not None:")
        _emit_record_branches(src, dict(records), value, ind + 1, path)
        keyword = "elif"
    elif records:
        name, fields = src.local(), src.local()
        indexes = src.constant({definition["name"]: index for index, definition in records})
        expected = f"a branch of {path}: " + ", ".join(d["name"] for _, d in records)
        src.add(
            ind,
            f"if type({value}) is tuple:",
            f"    {name}, {fields} = {value}",
            f"    i = {indexes}.get({name})",
            "    if i is None:",
            f"        _not_a({expected!r}, {name}, {path!r})",
        )
        _emit_record_branches(src, dict(records), fields, ind + 1, path)
        keyword = "elif"
    if null:
        src.add(ind, f"{keyword} {value} is None:", f"    out.append({null[0][0] << 1})")
        keyword = "elif"
    if keyword == "if":  # only the one plain branch
        src.add(ind, f"out.append({other[0][0] << 1})")
        _emit_write(src, other[0][2], value, ind, path)
        return
    src.add(ind, "else:")
    if other:
        src.add(ind + 1, f"out.append({other[0][0] << 1})")
        _emit_write(src, other[0][2], value, ind + 1, path)
    elif src.classes is not None:
        names = ", ".join(src.classes[d["name"]].__name__ for _, d in records)
        src.add(ind + 1, f"_not_a({'one of ' + names!r}, {value}, {path!r})")
    else:
        src.add(ind + 1, f"_not_a('a (name, fields) tuple', {value}, {path!r})")


def compile_writer(schema: dict[str, Any]) -> Callable[[bytearray, Any], None]:
    """`write(out, value)`, appending the Avro binary form of `value` to `out`."""
    src = Source(schema)
    src.add(0, "def write(out, value):")
    _emit_write(src, schema, "value", 1, schema["name"])
    return src.function("write", _WRITE_HELPERS)


def compile_object_writer(
    schema: dict[str, Any],
    classes: Mapping[str, type],
    fields: Mapping[str, str],
    params: tuple[str, ...] = (),
    helpers: Mapping[str, Any] | None = None,
) -> Callable[..., None]:
    """`write(out, value, *params)` for a tree of objects instead of dicts: a record's
    field is the attribute of that name, or the expression `fields["Record.field"]`
    (`{0}` the object, `{1}` the field's name; may call `helpers` or use `params`), and a
    union of records picks its branch by the object's class (`classes`, by record name).
    Saves building the plain record first (the producers' path from models to bytes)."""
    src = Source(schema, classes, fields)
    src.add(0, f"def write({', '.join(('out', 'value', *params))}):")
    _emit_write(src, schema, "value", 1, schema["name"])
    return src.function("write", {**_WRITE_HELPERS, **(helpers or {})})
