#!/usr/bin/env python3
"""Checks that the top-level modules of src/ import each other in one direction only.

Each module sits in a layer (LAYERS, lowest first) and may name, through `crate::` paths,
only modules of lower layers: a `use crate::api::...` in `routing` fails, and so does any
edge that would close a cycle. `lib` stands for the items of src/lib.rs itself (`serve`,
`app`, ...); a name src/lib.rs re-exports (`pub use crate::api::gateway::Gateway;`) counts
as the module it comes from. Modules of one layer do not import each other. Test code
counts too.

docs/ARCHITECTURE.md ("Layers") explains the order. Run by `make lint`; exits 1 and names
each offending file when a module imports upward or sideways.
"""

import pathlib
import re
import sys

LAYERS = [
    ["config", "ir"],
    ["redact"],
    ["error"],
    ["metrics"],
    ["dialect"],
    ["routing"],
    ["upstream"],
    ["keys"],
    ["store"],
    ["actors"],
    ["auth", "ratelimit"],
    ["api"],
    ["lib"],
    ["sim"],
    ["cli"],
]

LAYER_OF = {m: i for i, layer in enumerate(LAYERS) for m in layer}


IDENT = re.compile(r"\w+")


def tree(text, i):
    """Parses a use tree at `text[i:]` (`a::b`, `a::{b, c::d}`, `a::*`): its paths, each
    as a list of segments, and where it ends."""
    if text.startswith("{", i):
        paths, i = [], i + 1
        while True:
            i = skip(text, i)
            if text.startswith("}", i):
                return paths, i + 1
            sub, i = tree(text, i)
            paths += sub
            i = skip(text, i)
            if text.startswith(",", i):
                i += 1
    m = IDENT.match(text, i)
    if not m:
        return [[]], i
    head, i = m.group(0), m.end()
    if text.startswith("::", i):
        rest, i = tree(text, i + 2)
        return [[head] + r for r in rest], i
    return [[head]], i


def skip(text, i):
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def paths(text, prefix):
    """Every path named after `prefix` (`crate::` or `super::`), as segment lists."""
    found = []
    for m in re.finditer(r"\b" + prefix + "::", text):
        found += tree(text, m.end())[0]
    return [p for p in found if p]


def module_of(src, path):
    first = path.relative_to(src).parts[0]
    return first[: -len(".rs")] if first.endswith(".rs") else first


def file_cycles(src):
    """Cycles between the files of one module (`actors/backend.rs` naming
    `actors::supervisor` while `supervisor` names `backend`). A module's root file
    (`mod.rs`) declares the others and is left out."""
    graph = {}
    for path in src.rglob("*.rs"):
        parts = list(path.relative_to(src).parts)
        if len(parts) < 2:
            continue
        module, name = parts[0], parts[1].removesuffix(".rs")
        if name == "mod":
            continue
        text = re.sub(r"//.*", "", path.read_text(encoding="utf-8"))
        named = {p[1] for p in paths(text, "crate") if len(p) > 1 and p[0] == module}
        if len(parts) == 2:
            named |= {p[0] for p in paths(text, "super")}
        unit = f"{module}/{name}"
        graph.setdefault(unit, set()).update(
            f"{module}/{n}" for n in named if n != name
        )
    for unit in graph:
        graph[unit] &= set(graph)
    problems, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycle = tuple(sorted(trail))
                    if cycle not in seen:
                        seen.add(cycle)
                        problems.append("src/: files import each other: " + " -> ".join(trail + [start]))
                elif nxt not in trail and nxt > start:
                    stack.append((nxt, trail + [nxt]))
    return problems


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    src = root / "src"
    modules = {module_of(src, p) for p in src.rglob("*.rs")} - {"main"}
    reexports = {
        m.group(2): m.group(1)
        for m in re.finditer(
            r"^pub use (?:crate::)?(\w+)::(?:\w+::)*(\w+);",
            (src / "lib.rs").read_text(encoding="utf-8"),
            re.M,
        )
    }
    problems = []
    unknown = sorted(modules - set(LAYER_OF) - {"lib"})
    for m in unknown:
        problems.append(f"src/{m}: a top-level module with no layer in {__file__}")
    for path in sorted(src.rglob("*.rs")):
        here = module_of(src, path)
        if here == "main":
            continue
        text = re.sub(r"//.*", "", path.read_text(encoding="utf-8"))
        for name in sorted({p[0] for p in paths(text, "crate")}):
            there = name if name in modules else reexports.get(name, "lib")
            if there in ("self", "super") or there == here:
                continue
            if there not in LAYER_OF or here not in LAYER_OF:
                continue
            if LAYER_OF[there] >= LAYER_OF[here]:
                rel = path.relative_to(root)
                problems.append(
                    f"{rel}: `{here}` imports `crate::{name}` (`{there}` is not below it)"
                )
    problems += file_cycles(src)
    for p in problems:
        print(p)
    if problems:
        print("layer order, lowest first: " + " < ".join("/".join(l) for l in LAYERS))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
