"""Short, bounded runs of every fuzz target (``fuzz/targets.py``): property-based with
hypothesis (random bytes and mutated valid inputs), coverage-guided with atheris for a
few seconds each, plus every input a fuzzer ever found (``fuzz/regressions/``).
Longer runs: ``fuzz/README.md``."""
from __future__ import annotations

import os
import re
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
# libFuzzer's "cov:" floor for the short runs: about 60% of what the seeds alone reach with
# every module instrumented. With only the remoting modules instrumented (issue #19 item 9)
# hpack, grpc_connection and protobuf stayed at 26, 30 and 9 after a whole minute.
COV_FLOOR = {
    "remoting_frame": 150, "remoting_stream": 110, "remoting_body": 170, "fastjson": 80, "hpack": 50,
    "grpc_connection": 200, "protobuf": 40, "filter": 900, "capture": 650, "tcp_reassembly": 280,
    "tls_connection": 200, "tls_keylog": 40,
}

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


def _need_atheris() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but atheris is not installed (pip install atheris)", pytrace=False)
        pytest.skip("atheris not installed")


def _check_instrumented(*pre_import: str) -> subprocess.CompletedProcess[str]:
    """``fuzz.run --check-instrumented`` in a fresh interpreter, after importing
    ``pre_import`` (outside atheris' hook, as the old runner did with lazy imports)."""
    code = "".join(f"import {m}; " for m in pre_import)
    code += "import sys; from fuzz import run; run.main(['fuzz.run', '--check-instrumented'])"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_every_function_a_target_reaches_is_instrumented() -> None:
    """After fuzz.run's instrumentation step, every project function each target's
    seeds call (lazily imported gRPC, filter and pipeline modules included) carries
    atheris' instrumentation, so libFuzzer sees its branches."""
    _need_atheris()
    r = _check_instrumented()
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    lines = dict(re.findall(r"^(\w+): (\d+ functions reached, \d+) not instrumented$", r.stdout, re.M))
    assert sorted(lines) == NAMES, r.stdout
    for name, figures in lines.items():
        reached, blind = map(int, figures.split(" functions reached, "))
        assert reached >= 5 and blind == 0, (name, figures)  # tls_keylog reaches 6: a parser and its helpers


def test_instrumentation_check_sees_a_blind_module() -> None:
    """The check above can fail: a decoder imported before the hook (what the old
    runner's lazy imports amounted to) is reported, function by function."""
    _need_atheris()
    r = _check_instrumented("dissectors.grpc.hpack_decoder")
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "dissectors/grpc/hpack_decoder.py:TolerantDecoder.decode" in r.stdout, r.stdout
    assert re.search(r"^remoting_frame: \d+ functions reached, 0 not instrumented$", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("name", NAMES)
def test_atheris_short_run(name: str, tmp_path) -> None:
    """Coverage-guided: a few seconds of libFuzzer per target, seeded from
    ``fuzz/seeds.py`` and the regressions; zero findings expected, and libFuzzer's
    coverage figure shows the target's modules are instrumented (COV_FLOOR)."""
    _need_atheris()
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
    cov = max(map(int, re.findall(r" cov: (\d+) ", r.stderr)))
    assert cov >= COV_FLOOR[name], (name, cov, r.stderr[-2000:])
