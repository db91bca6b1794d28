"""Coverage-guided fuzzing of one target with atheris (libFuzzer).

    python -m fuzz.run TARGET [CORPUS_DIR ...] [libFuzzer flags, e.g. -max_total_time=600]
    python -m fuzz.run --list

With no corpus directory, a temporary one is seeded from ``fuzz/seeds.py``. Crashing
inputs are written where ``-artifact_prefix=`` says (default: the current directory).
See ``fuzz/README.md``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["dissectors", "rmqsniff", "fuzz"]):
        from fuzz import seeds, targets

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
