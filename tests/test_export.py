"""Exports: pcapng of exactly the selected exchanges' packets (re-read by rmqsniff, accepted by
tshark/capinfos), JSON lines and CSV."""
from __future__ import annotations

import csv
import io
import shutil
import subprocess

import orjson
import pytest

from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.exporters.export import CSV_COLUMNS, packets_of, write_csv, write_jsonl, write_pcapng
from rmqsniff.filter import compile_filter
from rmqsniff.pipeline import analyze
from rmqsniff.sources.pcapfile import open_capture
from rmqsniff.synth import write_capture
from tests.support.captures import CAPTURES, real_params
from tests.support.remoting_scenario import SCENARIO, label_of, write_scenario


def signature(ex) -> tuple:
    """What makes an exchange the same exchange in another capture."""
    req, resp = ex.request, ex.response
    return (ex.connection.client, ex.connection.server, ex.status,
            req.command.code if req else None, resp.command.code if resp else None,
            (req or resp).command.opaque, round(ex.ts, 6),
            None if ex.latency_ms is None else round(ex.latency_ms, 3),
            req.size if req else None, resp.size if resp else None)


def read_packets(path) -> list[tuple[float, int, bytes]]:
    r = open_capture(str(path))
    try:
        return list(r)
    finally:
        r.f.close()


def export(paths, expr, out, control=False):
    res = analyze([str(p) for p in paths], track_packets=True)
    f = compile_filter(expr)
    chosen = [e for e in res.exchanges if f(e)]
    wanted = packets_of(chosen, control=control)
    with open(out, "wb") as fh:
        n = write_pcapng([str(p) for p in paths], wanted, fh)
    return res, chosen, wanted, n


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    write_capture(str(d / "one.pcap"), 800, seed=5, connections=8)
    write_scenario(d / "two.pcapng", fmt="pcapng")  # other client endpoints than one.pcap
    return d


@pytest.mark.parametrize("expr,control", [
    ("topic == orders", False), ("code == PULL_MESSAGE and latency > 5ms", False),
    ("code == HEART_BEAT or topic == audit", False), ("code == HEART_BEAT or topic == audit", True),
    ("topic == orders", True)])  # with the SYN but without the stream's first bytes
def test_pcapng_reread_gives_the_same_exchanges(synth, tmp_path, expr, control):
    out = tmp_path / "sel.pcapng"
    _, chosen, wanted, n = export([synth / "one.pcap"], expr, out, control)
    assert chosen and n == len(wanted)
    again = analyze([str(out)])
    assert not again.errors
    assert sorted(map(signature, again.exchanges)) == sorted(map(signature, chosen))


def test_pcapng_copies_exactly_the_wanted_packets_bytes_and_times(synth, tmp_path):
    out = tmp_path / "sel.pcapng"
    _, chosen, wanted, _ = export([synth / "one.pcap"], "topic == payments", out, control=True)
    original = read_packets(synth / "one.pcap")
    want = [original[i] for i in sorted(wanted)]
    got = read_packets(out)
    assert [(round(t, 6), lt, fr) for t, lt, fr in got] == [(round(t, 6), lt, fr) for t, lt, fr in want]
    # each chosen exchange's frames were carried by the exported packets, control packets too
    conns = {e.connection.id: e.connection for e in chosen}
    assert all(set(c.control_packets) <= wanted for c in conns.values())
    assert len(got) == len(wanted)


def test_pcapng_across_two_files(synth, tmp_path):
    out = tmp_path / "both.pcapng"
    paths = [synth / "one.pcap", synth / "two.pcapng"]
    _, chosen, _, _ = export(paths, 'topic ~ "^orders" and code != HEART_BEAT', out)
    ends = {v[0] for v in SCENARIO.values()}
    scenario = {label_of(e) for e in chosen if e.connection.client in ends}
    assert scenario == {"a1", "a2", "b1", "b2", "c1"}  # the second file contributes
    assert len(chosen) > len(scenario)  # and so does the first
    again = analyze([str(out)])
    assert sorted(map(signature, again.exchanges)) == sorted(map(signature, chosen))


@pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("capinfos") is None,
                    reason="tshark/capinfos not installed")
def test_pcapng_opens_in_tshark_and_capinfos(synth, tmp_path):
    out = tmp_path / "sel.pcapng"
    _, _, wanted, _ = export([synth / "one.pcap"], "topic == orders", out)
    info = subprocess.run(["capinfos", "-c", "-M", str(out)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert f"Number of packets:   {len(wanted)}" in info.stdout
    tsh = subprocess.run(["tshark", "-n", "-r", str(out), "-T", "fields", "-e", "tcp.srcport"],
                         capture_output=True, text=True, timeout=60)
    assert tsh.returncode == 0, tsh.stderr
    assert len(tsh.stdout.splitlines()) == len(wanted)


def test_untracked_packets_are_refused(synth):
    res = analyze([str(synth / "one.pcap")])
    with pytest.raises(ValueError, match="track_packets"):
        packets_of(res.exchanges[:1])


def test_jsonl_and_csv(tmp_path):
    write_scenario(tmp_path / "s.pcap")
    res = analyze([str(tmp_path / "s.pcap")])
    f = compile_filter("status == error or status == oneway")
    chosen = [e for e in res.exchanges if f(e)]
    assert {label_of(e) for e in chosen} == {"a2", "c1", "a4"}
    buf = io.StringIO()
    assert write_jsonl(chosen, buf) == 3
    lines = [orjson.loads(x) for x in buf.getvalue().splitlines()]
    assert lines == [orjson.loads(orjson.dumps(exchange_to_dict(e))) for e in chosen]
    buf = io.StringIO()
    write_csv(chosen, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    by_opaque = {int(r["opaque"]): r for r in rows}
    a2, c1, a4 = (SCENARIO[k][2] for k in ("a2", "c1", "a4"))
    assert by_opaque[a2.opaque]["response_name"] == "SYSTEM_BUSY" and by_opaque[a2.opaque]["topic"] == "orders_us"
    assert by_opaque[a2.opaque]["result"] == "error"
    assert by_opaque[c1.opaque]["server"] == "10.0.0.9:9876" and by_opaque[c1.opaque]["name"] == \
        "GET_ROUTEINFO_BY_TOPIC"
    assert by_opaque[a4.opaque]["status"] == "oneway" and by_opaque[a4.opaque]["latency_ms"] == ""


# ---------------------------------------------------------------- real captures

@pytest.mark.parametrize("name", real_params())
@pytest.mark.parametrize("control", [False, True])
def test_real_pcapng_export_round_trip(name, control, tmp_path):
    import json

    truth = json.loads((CAPTURES / f"{name}.truth.json").read_text())
    expr = f'topic == "{truth["topic"]}"'
    out = tmp_path / "sel.pcapng"
    res, chosen, wanted, n = export([CAPTURES / f"{name}.pcap"], expr, out, control)
    assert chosen and n == len(wanted)
    again = analyze([str(out)])
    f = compile_filter(expr)
    # a packet may also carry (part of) a neighbouring frame: the re-read capture may show more
    # exchanges, but exactly the same ones match the filter
    assert sorted(signature(e) for e in again.exchanges if f(e)) == sorted(map(signature, chosen))
    if shutil.which("tshark"):
        tsh = subprocess.run(["tshark", "-n", "-r", str(out)], capture_output=True, text=True, timeout=120)
        assert tsh.returncode == 0, tsh.stderr
        assert len(tsh.stdout.splitlines()) == len(wanted)
