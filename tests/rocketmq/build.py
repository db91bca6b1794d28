"""Build (or reuse) the RocketMQ runtime, the gRPC Java client and the client programs.

Everything lands in the cache folder ``$RMQSNIFF_CACHE`` (default ``~/.cache/rmqsniff``),
never in the repository. Each build step writes a stamp file holding the hash of its
inputs; a step whose stamp matches is skipped, so a warm rerun costs no Maven or javac.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROCKETMQ_VERSION = "5.3.3"
GRPC_CLIENT_VERSION = "5.2.0"
PYTHON_CLIENT_VERSION = "5.1.2"
GO_CLIENT_VERSION = "v2.1.2"  # github.com/apache/rocketmq-client-go/v2, pinned in go/go.mod
TLS_AGENT = "name.neykov:extract-tls-secrets:4.0.0"  # Java agent writing an NSS key log of the JDK's TLS
STAMP = ".rmqsniff-stamp"


class BuildError(RuntimeError):
    """A build step failed; the message carries the tail of its output."""


def cache_dir() -> Path:
    """The cache root (``$RMQSNIFF_CACHE`` or ``~/.cache/rmqsniff``)."""
    return Path(os.environ.get("RMQSNIFF_CACHE", "~/.cache/rmqsniff")).expanduser()


def runtime_home() -> Path:
    return cache_dir() / f"rocketmq-{ROCKETMQ_VERSION}"


def server_lib() -> Path:
    return runtime_home() / "lib"


def grpc_lib() -> Path:
    return cache_dir() / f"rocketmq-client-java-{GRPC_CLIENT_VERSION}" / "lib"


def _hash(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _fresh(folder: Path, digest: str) -> bool:
    stamp = folder / STAMP
    return stamp.is_file() and stamp.read_text().strip() == digest


def _run(cmd: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:3])} ...\n{tail}")


def _maven_copy(pom: Path, lib: Path) -> Path:
    """Run copy-dependencies for ``pom`` into ``lib`` unless its stamp matches."""
    digest = _hash(pom)
    if _fresh(lib, digest):
        return lib
    if shutil.which("mvn") is None:
        raise BuildError("mvn not found on PATH")
    work = lib.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(lib, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(pom, work / "pom.xml")  # keep Maven's target/ out of the repo
    _run(["mvn", "-B", "-q", "package", f"-Drmq.lib.dir={lib}"], f"maven build of {pom.parent.name}", cwd=work)
    if not any(lib.glob("*.jar")):
        raise BuildError(f"maven produced no jars in {lib}")
    shutil.rmtree(work, ignore_errors=True)
    (lib / STAMP).write_text(digest + "\n")
    return lib


def build_server() -> Path:
    """The server + tools + remoting client jars."""
    return _maven_copy(HERE / "runtime" / "pom.xml", server_lib())


def build_grpc_client() -> Path:
    """The 5.x gRPC Java client jars (separate classpath)."""
    return _maven_copy(HERE / "grpc-client" / "pom.xml", grpc_lib())


def _javac(sources: list[Path], lib: Path, out: Path) -> Path:
    digest = _hash(*sources, extra=str(lib))
    if _fresh(out, digest):
        return out
    if shutil.which("javac") is None:
        raise BuildError("javac not found on PATH")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _run(["javac", "-nowarn", "-encoding", "UTF-8", "-cp", f"{lib}/*", "-d", str(out), *map(str, sources)],
         "javac " + " ".join(s.name for s in sources))
    (out / STAMP).write_text(digest + "\n")
    return out


def build_remoting_programs() -> Path:
    """Compile the admin helper and the remoting scenario programs against the server lib."""
    lib = build_server()
    srcs = sorted((HERE / "java").glob("*.java"))
    return _javac(srcs, lib, runtime_home() / "classes")


def build_grpc_programs() -> Path:
    """Compile the gRPC scenario program against the gRPC client lib."""
    lib = build_grpc_client()
    srcs = sorted((HERE / "grpc-client").glob("*.java")) + [HERE / "java" / "Json.java"]
    return _javac(srcs, lib, grpc_lib().parent / "classes")


def tls_agent() -> Path:
    """The ``extract-tls-secrets`` Java agent jar from Maven Central, cached.

    ``-javaagent:JAR=KEYLOG`` makes a JVM append the secrets of every TLS session of the JDK's
    own engine (JSSE) to KEYLOG in the NSS key log format; Netty's tcnative (OpenSSL/BoringSSL)
    engine is invisible to it.
    """
    _, artifact, version = TLS_AGENT.split(":")
    out = cache_dir() / f"{artifact}-{version}"
    jar = out / f"{artifact}-{version}.jar"
    if _fresh(out, TLS_AGENT) and jar.is_file():
        return jar
    if shutil.which("mvn") is None:
        raise BuildError("mvn not found on PATH")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _run(["mvn", "-B", "-q", "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
          f"-Dartifact={TLS_AGENT}", f"-DoutputDirectory={out}"], f"maven download of {TLS_AGENT}", cwd=out)
    if not jar.is_file():
        raise BuildError(f"maven did not produce {jar}")
    (out / STAMP).write_text(TLS_AGENT + "\n")
    return jar


def python_client_venv() -> Path:
    """A venv in the cache with ``rocketmq-python-client`` (kept out of the project env)."""
    venv = cache_dir() / f"pyclient-{PYTHON_CLIENT_VERSION}"
    py = venv / "bin" / "python"
    digest = f"rocketmq-python-client=={PYTHON_CLIENT_VERSION}"
    if _fresh(venv, digest) and py.exists():
        return py
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)], "python venv")
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", digest], "pip install " + digest)
    (venv / STAMP).write_text(digest + "\n")
    return py


def go_env() -> dict[str, str]:
    """``go`` with its module cache, GOPATH and build cache inside the cache folder.

    GOTOOLCHAIN=local: never fetch another toolchain; -modcacherw: the cache stays deletable.
    """
    root = cache_dir() / "go"
    return dict(os.environ, GOPATH=str(root), GOMODCACHE=str(root / "pkg" / "mod"),
                GOCACHE=str(root / "build-cache"), GOFLAGS="-modcacherw", GOTOOLCHAIN="local")


def build_go_scenario() -> Path:
    """``go build`` tests/rocketmq/go (rocketmq-client-go/v2) into the cache; returns the binary."""
    src = HERE / "go"
    out = cache_dir() / f"go-scenario-{GO_CLIENT_VERSION}"
    exe = out / "go-scenario"
    go = shutil.which("go")
    if go is None:
        raise BuildError("go not found on PATH")
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    digest = _hash(*(src / n for n in ("main.go", "go.mod", "go.sum")), extra=version)
    if _fresh(out, digest) and exe.exists():
        return exe
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _run([go, "build", "-trimpath", "-buildvcs=false", "-o", str(exe), "."], "go build of tests/rocketmq/go",
         cwd=src, env=go_env())
    (out / STAMP).write_text(digest + "\n")
    return exe


def build_all() -> None:
    build_remoting_programs()


if __name__ == "__main__":
    build_all()
    print(server_lib())
