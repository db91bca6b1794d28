"""The code's layout rules, checked on the source: no import cycles between the project's
modules (imports at module level, outside ``TYPE_CHECKING``), and the sans-I/O dissectors
import nothing of rmqsniff's."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rmqsniff", "dissectors", "replay")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


def _top_level_imports(mod: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in tree.body:  # module level only: imports inside functions are deliberate
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ([node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node)):
            if isinstance(n, ast.Import):
                for a in n.names:
                    r = resolve(a.name)
                    if r:
                        found.add(r)
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    prefix = ".".join(base[: len(base) - n.level + 1])
                    target = f"{prefix}.{n.module}" if n.module else prefix
                else:
                    target = n.module or ""
                for a in n.names:  # "from pkg import mod" imports the submodule
                    r = resolve(f"{target}.{a.name}") if f"{target}.{a.name}" in known else resolve(target)
                    if r:
                        found.add(r)
    found.discard(mod)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _top_level_imports(m, p, known) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            # importing a package runs its __init__, which imports what it re-exports: a
            # submodule importing its own package's names is the usual Python layout, not a cycle
            if v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dissectors_import_nothing_of_rmqsniff_or_replay():
    g = _graph()
    bad = {m: sorted(x for x in deps if not x.startswith("dissectors")) for m, deps in g.items()
           if m.startswith("dissectors")}
    assert {m: d for m, d in bad.items() if d} == {}
