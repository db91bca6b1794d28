"""TLS decryption (dissectors.tls) of real OpenSSL traffic: Python's ``ssl`` over memory BIOs
and the ``openssl`` command's client and server, each writing its real NSS key log."""
from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from dissectors.tls import KeyLog, Plaintext, Problem, Status, TlsConnection
from dissectors.tls.connection import MAX_PENDING
from tests.support.tlspair import contexts, make_cert, openssl_sessions, openssl_talk, tls_talk

MESSAGES = [(True, b"hello " * 1000), (False, b"world"), (True, b"x" * 40000), (False, b"y" * 17000)]
V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    d = tmp_path_factory.mktemp("certs")
    return {"ec": make_cert(d, "ec"), "rsa": make_cert(d, "rsa")}


def keylog_of(path: Path) -> KeyLog:
    k = KeyLog()
    k.feed(path.read_text())
    k.end()
    return k


def decrypt(wire: list[tuple[bool, bytes]], keylog: KeyLog, conn: TlsConnection | None = None
            ) -> tuple[TlsConnection, dict[bool, bytes], list[object]]:
    t = conn or TlsConnection(keylog)
    out = {True: b"", False: b""}
    other: list[object] = []
    for fc, data in wire:
        for ev in t.data(fc, data):
            if isinstance(ev, Plaintext):
                out[ev.from_client] += ev.data
            else:
                other.append(ev)
    other.extend(t.close())
    return t, out, other


def expected(messages: list[tuple[bool, bytes]]) -> dict[bool, bytes]:
    return {fc: b"".join(m for f, m in messages if f == fc) for fc in (True, False)}


@pytest.mark.parametrize("version,ciphers,cert,name", [
    (V13, None, "ec", "TLS_AES_256_GCM_SHA384"),
    (V12, "ECDHE-ECDSA-AES128-GCM-SHA256", "ec", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (V12, "ECDHE-ECDSA-AES256-GCM-SHA384", "ec", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (V12, "ECDHE-ECDSA-CHACHA20-POLY1305", "ec", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (V12, "ECDHE-RSA-AES128-GCM-SHA256", "rsa", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (V12, "AES128-GCM-SHA256", "rsa", "TLS_RSA_WITH_AES_128_GCM_SHA256"),  # RSA key exchange
])
def test_python_ssl_decrypts(tmp_path: Path, certs: dict[str, tuple[str, str]], version: ssl.TLSVersion,
                             ciphers: str | None, cert: str, name: str) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs[cert], keys, version=version, ciphers=ciphers, alpn=["h2"])
    wire, _ = tls_talk(c, s, MESSAGES)
    t, out, events = decrypt(wire, keylog_of(keys))
    assert out == expected(MESSAGES)
    assert t.info().pop("client_random") == t.client_random.hex()
    info = {k: v for k, v in t.info().items() if k != "client_random"}
    assert info == {"status": "decrypted", "version": "TLS 1.3" if version == V13 else "TLS 1.2",
                    "cipher": name, "sni": "rmqsniff.test", "alpn": "h2"}
    assert events == [Status("decrypted")]


def test_records_split_over_segments(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """Every byte its own segment: the ClientHello over hundreds of them, records over many."""
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V13)
    msgs = [(True, b"abc" * 50), (False, b"def" * 50)]
    wire, _ = tls_talk(c, s, msgs)
    bytewise = [(fc, data[i:i + 1]) for fc, data in wire for i in range(len(data))]
    assert sum(1 for fc, _ in bytewise if fc) > 100
    t, out, _ = decrypt(bytewise, keylog_of(keys))
    assert out == expected(msgs) and t.status == "decrypted"


openssl_cmd = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@openssl_cmd
def test_tls13_chacha20_and_key_update(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """The openssl client picks ChaCha20-Poly1305 and sends a KeyUpdate mid-connection (its ``k``)."""
    keys = tmp_path / "keys.log"
    wire = openssl_talk(certs["ec"], keys, [b"hello", b"k", b"after the update"],
                        client_args=("-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"))
    t, out, _ = decrypt(wire, keylog_of(keys))
    assert t.info()["cipher"] == "TLS_CHACHA20_POLY1305_SHA256" and t.status == "decrypted"
    assert t.key_updates == 1
    assert out == {True: b"hello\nafter the update\n", False: b"olleh\netadpu eht retfa\n"}


@openssl_cmd
def test_tls13_hello_retry_request(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """The server accepts only P-384, the client's first key share is X25519: HelloRetryRequest."""
    keys = tmp_path / "keys.log"
    wire = openssl_talk(certs["ec"], keys, [b"retried"], client_args=("-ciphersuites", "TLS_AES_128_GCM_SHA256"),
                        server_args=("-groups", "P-384"))
    t, out, _ = decrypt(wire, keylog_of(keys))
    assert t.retried and t.info()["cipher"] == "TLS_AES_128_GCM_SHA256"
    assert out == {True: b"retried\n", False: b"deirter\n"}


@pytest.mark.parametrize("version", [V12, V13])
def test_resumed_session(tmp_path: Path, certs: dict[str, tuple[str, str]], version: ssl.TLSVersion) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=version)
    wire1, obj = tls_talk(c, s, MESSAGES[:2])
    wire2, obj2 = tls_talk(c, s, MESSAGES[2:], session=obj.session)
    assert obj2.session_reused
    kl = keylog_of(keys)
    resumable = TlsConnection(kl).resumable
    for wire, msgs in ((wire1, MESSAGES[:2]), (wire2, MESSAGES[2:])):
        t, out, _ = decrypt(wire, kl, TlsConnection(kl, resumable))
        assert out == expected(msgs) and t.status == "decrypted"


def test_tls12_resumed_without_its_own_line(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """A TLS 1.2 session resumed by ticket decrypts with the master secret of the session it
    resumes even when the key log has no line for the resumed connection (by session id alone:
    :func:`test_tls12_resumed_by_session_id_alone`)."""
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V12)
    wire1, obj = tls_talk(c, s, MESSAGES[:2])
    first_line = [ln for ln in keys.read_text().splitlines() if not ln.startswith("#")][0]
    wire2, obj2 = tls_talk(c, s, MESSAGES[2:], session=obj.session)
    assert obj2.session_reused
    kl = KeyLog()
    kl.feed(first_line + "\n")
    t1, _, _ = decrypt(wire1, kl)
    t2, out, _ = decrypt(wire2, kl, TlsConnection(kl, t1.resumable))
    assert out == expected(MESSAGES[2:]) and t2.status == "decrypted"


def test_tls12_resumed_by_session_id_alone(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """TLS 1.2 resumption by session id, no ticket (``s_server -no_ticket``; ``s_client
    -sess_out``/``-sess_in``): the ServerHello repeats the ClientHello's session id and the
    resumed connection decrypts with the first connection's master secret, its own key log
    line removed."""
    keys, sess = tmp_path / "keys.log", tmp_path / "session.pem"
    v12 = ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    wire1, wire2 = openssl_sessions(certs["ec"], keys, [([b"first"], (*v12, "-sess_out", str(sess))),
                                                        ([b"resumed"], (*v12, "-sess_in", str(sess)))],
                                    server_args=("-no_ticket",))
    lines = [ln for ln in keys.read_text().splitlines() if ln.startswith("CLIENT_RANDOM")]
    assert len(lines) == 2  # one per connection; only the first is kept below
    kl = KeyLog()
    kl.feed(lines[0] + "\n")
    t1, out1, _ = decrypt(wire1, kl)
    assert out1 == {True: b"first\n", False: b"tsrif\n"} and t1.sh is not None and t1.sh.session_id
    fresh = TlsConnection(kl, t1.resumable)
    t2, out2, _ = decrypt(wire2, kl, fresh)
    assert t2.ch is not None and t2.sh is not None
    assert t2.sh.session_id == t2.ch.session_id == t1.sh.session_id  # resumed by id
    assert not t2.ch.ticket  # no session ticket offered: the id alone resumes
    assert out2 == {True: b"resumed\n", False: b"demuser\n"} and t2.status == "decrypted"
    # without the first connection seen, the resumed one has no secret
    _, nothing, _ = decrypt(wire2, kl)
    assert nothing == {True: b"", False: b""}


@pytest.mark.parametrize("version", [V12, V13])
def test_no_key(tmp_path: Path, certs: dict[str, tuple[str, str]], version: ssl.TLSVersion) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=version)
    wire, _ = tls_talk(c, s, MESSAGES)
    t, out, events = decrypt(wire, KeyLog())
    assert out == {True: b"", False: b""}
    assert t.status == f"no key (client random {t.client_random.hex()})" and len(t.client_random) == 32
    assert events == [Status(t.status)]
    assert keylog_of(keys).get(t.client_random, "CLIENT_RANDOM" if version == V12 else "CLIENT_TRAFFIC_SECRET_0")


def test_key_arriving_later(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """A live tap: the key log line is read after the handshake went by (records held meanwhile)."""
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V13)
    wire, _ = tls_talk(c, s, MESSAGES)
    kl = KeyLog()
    t = TlsConnection(kl)
    half = len(wire) // 2
    _, out1, _ = decrypt(wire[:half], kl, t)
    assert t.status.startswith("no key") and out1 == {True: b"", False: b""}
    kl.feed(keys.read_text())
    t = TlsConnection(kl)  # a fresh connection fed the whole: same bytes as held + rest
    _, out, _ = decrypt(wire, kl, t)
    assert out == expected(MESSAGES)


def test_held_records_decrypt_when_key_arrives(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V13)
    wire, _ = tls_talk(c, s, MESSAGES[:2])
    kl = KeyLog()
    t = TlsConnection(kl)
    out = {True: b"", False: b""}
    for i, (fc, data) in enumerate(wire):
        if i == len(wire) - 1:
            kl.feed(keys.read_text())
        for ev in t.data(fc, data):
            if isinstance(ev, Plaintext):
                out[ev.from_client] += ev.data
    assert out == expected(MESSAGES[:2]) and t.status == "decrypted"
    assert sum(len(d) for _, d in wire) < MAX_PENDING


def test_tampered_record(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    wire, _ = tls_talk(c, s, MESSAGES)
    fc, last = wire[-1]
    wire[-1] = (fc, last[:-1] + bytes([last[-1] ^ 1]))
    t, out, _ = decrypt(wire, keylog_of(keys))
    assert t.status.startswith("decrypt failed at record ") and t.dead
    assert out[True] == expected(MESSAGES)[True]


def test_started_mid_session(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V13)
    wire, _ = tls_talk(c, s, MESSAGES)
    later = [(fc, d) for fc, d in wire[6:] if d[0] == 0x17]
    t, out, events = decrypt(later, keylog_of(keys))
    assert t.status == "started mid-session" and out == {True: b"", False: b""}


def test_hostile_lengths() -> None:
    t = TlsConnection(KeyLog())
    evs = t.data(True, b"\x16\x03\x01\xff\xff" + b"\0" * 10)  # a 65535-byte record: over the limit
    assert [e for e in evs if isinstance(e, Problem)] and t.dirs[True].reader.broken
    t = TlsConnection(KeyLog())
    evs = t.data(True, b"\x16\x03\x01\x00\x08\x01\xff\xff\xff\0\0\0\0")  # a 2^24-1 byte ClientHello
    assert t.status == "started mid-session" and t.dead


def test_keylog_garbage_counted() -> None:
    kl = KeyLog()
    cr = "ab" * 32
    added = kl.feed(f"# comment\nCLIENT_RANDOM {cr} {'cd' * 48}\ngarbage\nCLIENT_RANDOM zz {'cd' * 48}\n"
                    f"NOPE {cr} 00\nCLIENT_RANDOM {cr[:-2]}xx {'cd' * 48}\n\x00\x01\n{'A' * 5000}\n"
                    f"SERVER_TRAFFIC_SECRET_0 {cr} ")
    assert added == 1 and kl.bad == 6
    assert all(p.startswith("key log line ") for p in kl.problems)
    assert not any("cd" * 8 in p for p in kl.problems)  # never a secret in a reason
    assert kl.feed(f"{'ef' * 32}\n") == 1  # the rest of the partial line
    assert kl.get(bytes.fromhex(cr), "SERVER_TRAFFIC_SECRET_0") == bytes.fromhex("ef" * 32)


def test_capture_gap_stops_decryption(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """Bytes lost from the capture: record boundaries and sequence numbers are gone."""
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V13)
    wire, _ = tls_talk(c, s, MESSAGES)
    t = TlsConnection(keylog_of(keys))
    for fc, data in wire[:6]:
        t.data(fc, data)
    events = t.lost(True)
    assert t.status.startswith("decrypt failed at record ") and t.dead
    assert [e for e in events if isinstance(e, Problem) and "missing from the capture" in e.reason]


def test_held_records_are_bounded(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """Records waiting for a key: none for a complete key log (``hold=0``), at most ``hold`` per
    connection, and the shared budget for all; what is given back returns to the budget."""
    from dissectors.tls.connection import HoldBudget

    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V13)
    wire, _ = tls_talk(c, s, MESSAGES)
    t, _, _ = decrypt(wire, KeyLog(), TlsConnection(KeyLog(), hold=0))
    assert t.pending_bytes == 0 and t.dead and t.status.startswith("no key")
    budget = HoldBudget(20_000)
    a, b = TlsConnection(KeyLog(), budget=budget), TlsConnection(KeyLog(), budget=budget)
    for fc, data in wire[:5]:
        a.data(fc, data)
        b.data(fc, data)
    assert a.pending_bytes > 0 and budget.left >= 0
    for fc, data in wire[5:]:
        a.data(fc, data)
    assert a.dead and a.pending_bytes == 0  # over the budget: given up, bytes returned
    b.close()
    assert budget.left == 20_000


def test_cbc_suite_is_unsupported(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V12, ciphers="ECDHE-ECDSA-AES128-SHA")
    wire, _ = tls_talk(c, s, MESSAGES[:2])
    t, out, events = decrypt(wire, keylog_of(keys))
    assert t.status == "unsupported cipher TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
    assert events == [Status(t.status)] and out == {True: b"", False: b""}


def test_tls12_master_secret_by_session_id(tmp_path: Path, certs: dict[str, tuple[str, str]]) -> None:
    """The older ``RSA Session-ID:<id> Master-Key:<secret>`` key log form (what the
    extract-tls-secrets Java agent writes for TLS 1.2) decrypts by the ServerHello's session
    id, and its secret is then given as a CLIENT_RANDOM line for a secrets block."""
    keys = tmp_path / "keys.log"
    c, s = contexts(certs["ec"], keys, version=V12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    s.options |= ssl.OP_NO_TICKET  # a session id in the ServerHello, as the JDK's server sends
    wire, _ = tls_talk(c, s, MESSAGES)
    t, out, _ = decrypt(wire, keylog_of(keys))
    assert out == expected(MESSAGES) and t.sh is not None and t.sh.session_id
    master = keylog_of(keys).get(t.client_random, "CLIENT_RANDOM")
    assert master is not None
    kl = KeyLog()
    assert kl.feed(f"RSA Session-ID:{t.sh.session_id.hex().upper()} Master-Key:{master.hex().upper()}\n"
                   f"RSA Session-ID:zz Master-Key:00\nRSA Session-ID:{'ab' * 32} Nope:{'cd' * 48}\n") == 1
    assert kl.bad == 2 and not any("cd" * 8 in p for p in kl.problems)
    t2, out2, _ = decrypt(wire, kl)
    assert out2 == expected(MESSAGES) and t2.status == "decrypted"
    assert f"CLIENT_RANDOM {t.client_random.hex()} {master.hex()}" in kl.lines_for({t.client_random})
    _, nothing, _ = decrypt(wire, KeyLog())
    assert nothing == {True: b"", False: b""}
