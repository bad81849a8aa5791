"""The package's shape: no import circles between behest's modules, and the README's
architecture tree names every module where it is (the layout is a map)."""

from __future__ import annotations

import ast
from pathlib import Path

import behest

PACKAGE = Path(behest.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """behest modules that `path` imports at module level (not under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("behest"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("behest"))
    return found


def test_no_import_circles() -> None:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: {m for m in _imports(path) if m in files and m != name}
        for name, path in files.items()
    }
    graph["behest"] = set()  # the lazy public surface imports nothing at run time

    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    circles = [c for name in sorted(graph) if (c := cycle_from(name))]
    assert circles == []


def _architecture_tree() -> dict[str, str]:
    """The README's package tree, as the text of each folder's entry ('' for the top)."""
    readme = (PACKAGE.parent / "README.md").read_text()
    tree = readme.split("\nbehest/\n", 1)[1].split("```", 1)[0]
    entries: dict[str, str] = {"": ""}
    current = ""
    for line in tree.splitlines():
        if line.startswith("  ") and not line.startswith("   "):  # a new entry
            first = line.split()[0]
            current = first if first.endswith("/") else ""
            entries.setdefault(current, "")
        elif not line.startswith(" "):  # projections/, schemas/: beside the package
            current = "beside"
            entries.setdefault(current, "")
        entries[current] += line + "\n"
    return entries


def test_the_readmes_architecture_tree_names_every_module_where_it_is() -> None:
    tree = _architecture_tree()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] == "projections" or (path.name == "__init__.py" and len(parts) < 3):
            continue
        folder = "" if len(parts) == 1 else f"{parts[0]}/"
        name = path.name if len(parts) <= 2 else f"{parts[1]}/"
        if name not in tree.get(folder, "").replace("·", " ").split():
            missing.append(str(path.relative_to(PACKAGE)))
    assert missing == [], (
        f"README.md's architecture tree (## Architecture) does not name {missing}: add each "
        "to its folder's entry there, with a few words on what it holds"
    )
    for folder, text in tree.items():
        if folder in ("", "beside"):
            continue
        named = [w for w in text.replace("·", " ").split() if w.endswith(".py")]
        gone = [n for n in named if not (PACKAGE / folder / n).exists()]
        assert gone == [], (
            f"README.md's architecture tree names {folder}{gone}, which do not exist: "
            "take them out of its entry (or name where they went)"
        )
