"""Short, bounded runs of every fuzz target (``fuzz/targets.py``): property-based with
hypothesis (random bytes and mutated valid inputs), coverage-guided with atheris for a
few seconds each, plus every input a fuzzer ever found (``fuzz/regressions/``).
Longer runs: ``fuzz/README.md``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import seeds, targets

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "fuzz" / "regressions"
NAMES = sorted(targets.TARGETS)
ATHERIS_SECONDS = 3

_FAST = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, name: str) -> bytes:
    """A valid input for ``name`` with a few byte edits, an insertion and a cut."""
    pool = seeds.seeds(name)
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(0, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=32))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.parametrize("name", NAMES)
def test_seeds_pass(name: str) -> None:
    """The valid inputs satisfy every check of their target (so the checks are not
    vacuous: a target that rejected good input would fail here)."""
    items = seeds.seeds(name)
    assert items
    for s in items:
        targets.TARGETS[name](s)


@pytest.mark.parametrize("name", NAMES)
def test_hypothesis_random_bytes(name: str) -> None:
    @_FAST
    @given(st.binary(max_size=4096))
    def run(data: bytes) -> None:
        targets.TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", NAMES)
def test_hypothesis_mutated_inputs(name: str) -> None:
    @_FAST
    @given(mutated(name))
    def run(data: bytes) -> None:
        targets.TARGETS[name](data)

    run()


def _regressions() -> list[tuple[str, Path]]:
    return sorted((d.name, f) for d in REGRESSIONS.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file())


@pytest.mark.parametrize(("name", "path"), _regressions(), ids=lambda v: getattr(v, "name", v))
def test_regression(name: str, path: Path) -> None:
    """Inputs that once crashed a target (kept as found by the fuzzer)."""
    targets.TARGETS[name](path.read_bytes())


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_atheris_short_run(name: str, tmp_path) -> None:
    """Coverage-guided: a few seconds of libFuzzer per target, seeded from
    ``fuzz/seeds.py`` and the regressions; zero findings expected."""
    if not _atheris_available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but atheris is not installed (pip install atheris)", pytrace=False)
        pytest.skip("atheris not installed")
    corpus = tmp_path / "corpus"
    seeds.write_corpus(name, corpus)
    reg = REGRESSIONS / name
    if reg.is_dir():
        for f in reg.iterdir():
            (corpus / f"reg-{f.name}").write_bytes(f.read_bytes())
    r = subprocess.run(
        [sys.executable, "-m", "fuzz.run", name, f"-max_total_time={ATHERIS_SECONDS}", "-rss_limit_mb=2048",
         "-timeout=20", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert r.returncode == 0 and not found, f"findings {found}:\n{r.stderr[-3000:]}"
    assert "Done" in r.stderr or "DONE" in r.stderr or "pulse" in r.stderr or "INITED" in r.stderr, r.stderr[-2000:]
