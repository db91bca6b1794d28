"""Coverage-guided fuzzing of one target with atheris (libFuzzer).

    python -m fuzz.run TARGET [CORPUS_DIR ...] [libFuzzer flags, e.g. -max_total_time=600]
    python -m fuzz.run --list
    python -m fuzz.run --check-instrumented [TARGET ...]

With no corpus directory, a temporary one is seeded from ``fuzz/seeds.py``. Crashing
inputs are written where ``-artifact_prefix=`` says (default: the current directory).
See ``fuzz/README.md``.

Every module of the project's packages is imported inside atheris' import hook before
fuzzing starts, so the modules a target imports lazily (gRPC, filter, pipeline) are
instrumented too and libFuzzer sees their branches; ``tests/test_fuzz.py`` checks that
every function a target's seeds reach carries atheris' instrumentation.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import CodeType, FrameType

PACKAGES = ("dissectors", "rmqsniff", "replay", "fuzz")
# Interactive shells and entry points no target reaches: importing them costs seconds
# (Textual, Locust) or has side effects (``__main__`` runs the CLI, Locust patches the
# process with gevent). The instrumentation check in tests/test_fuzz.py would flag any
# of them a target did reach.
NOT_REACHED = frozenset({
    "rmqsniff.__main__", "rmqsniff.cli", "rmqsniff.cli_live", "rmqsniff.cli_proxy", "rmqsniff.cli_replay",
    "rmqsniff.cli_tui", "rmqsniff.tui", "replay.locust", "replay.proxy", "dissectors.grpc.proto",
    "fuzz.run",
})


def _modules(package: str) -> list[str]:
    """``package`` and every module below it, found on disk without importing any
    (an import here would happen outside the hook and stay uninstrumented)."""
    root = importlib.util.find_spec(package)  # a top-level name: finds, does not import
    assert root is not None and root.submodule_search_locations is not None, package
    out = [package]
    todo = [(package, list(root.submodule_search_locations))]
    while todo:
        name, path = todo.pop()
        for info in pkgutil.iter_modules(path, name + "."):
            if info.name in NOT_REACHED:
                continue
            out.append(info.name)
            if info.ispkg:
                todo.append((info.name, [str(Path(path[0]) / info.name.rpartition(".")[2])]))
    return sorted(out)


def instrument() -> list[str]:
    """Import every module of PACKAGES (but NOT_REACHED) under atheris' import hook, so
    each is instrumented whether a target imports it at the top or inside a function.
    Returns the names imported. Modules imported before this call stay uninstrumented."""
    import atheris

    names = [m for p in PACKAGES for m in _modules(p)]
    with atheris.instrument_imports(include=list(PACKAGES)):
        for name in names:
            importlib.import_module(name)
    return names


MARK = "__ATHERIS_INSTRUMENTED__"  # the constant atheris adds to every code object it instruments


def _instrumentable(code: CodeType) -> bool:
    """Atheris' own rule: it leaves comprehensions and generator expressions
    (``<listcomp>``, ``<genexpr>``, ...) alone, lambdas and named functions it patches."""
    name = code.co_name
    return bool(name == "<lambda>" or not (name.startswith("<") and name.endswith(">")))


def _called_code(target: Callable[[bytes], None], inputs: Iterable[bytes]) -> set[CodeType]:
    """The code objects of every Python function ``target`` calls on ``inputs``."""
    called: set[CodeType] = set()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            called.add(frame.f_code)

    sys.setprofile(profile)
    try:
        for data in inputs:
            target(data)
    finally:
        sys.setprofile(None)
    return called


def uninstrumented(names: Iterable[str]) -> dict[str, tuple[int, list[str]]]:
    """Run each target's seeds with a profiler and list, per target, how many of the
    project's functions they call and which of those lack atheris' instrumentation
    (as ``path:qualname``; comprehensions, which atheris never instruments, are left
    out). Call after :func:`instrument`."""
    from fuzz import seeds, targets

    here = Path(__file__).resolve()
    roots = []
    for p in PACKAGES:
        spec = importlib.util.find_spec(p)
        assert spec is not None and spec.origin is not None, p
        roots.append(str(Path(spec.origin).resolve().parent) + os.sep)
    top = Path(roots[0]).parent
    out = {}
    for name in names:
        ours = [c for c in _called_code(targets.TARGETS[name], seeds.seeds(name))
                if c.co_filename.startswith(tuple(roots)) and Path(c.co_filename) != here and _instrumentable(c)]
        blind = [f"{Path(c.co_filename).relative_to(top)}:{c.co_qualname}" for c in ours if MARK not in c.co_consts]
        out[name] = (len(ours), sorted(blind))
    return out


def main(argv: list[str]) -> None:
    import atheris

    instrument()
    from fuzz import seeds, targets

    if len(argv) >= 2 and argv[1] == "--check-instrumented":
        report = uninstrumented(argv[2:] or targets.TARGETS)
        for name, (n, blind) in report.items():
            print(f"{name}: {n} functions reached, {len(blind)} not instrumented", *blind, sep="\n    ")
        sys.exit(1 if any(blind for _, blind in report.values()) else 0)

    if len(argv) < 2 or argv[1] in ("-h", "--help", "--list"):
        print("targets:", " ".join(targets.TARGETS))
        print(__doc__)
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in targets.TARGETS:
        sys.exit(f"fuzz.run: unknown target {name!r}; one of: {', '.join(targets.TARGETS)}")
    target = targets.TARGETS[name]
    rest = argv[2:]
    if not any(not a.startswith("-") for a in rest):
        corpus = Path(tempfile.mkdtemp(prefix=f"rmqsniff-fuzz-{name}-"))
        seeds.write_corpus(name, corpus)
        rest.append(str(corpus))
    atheris.Setup([argv[0], *rest], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
