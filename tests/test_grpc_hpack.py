"""The tolerant HPACK decoder against the ``hpack`` package's encoder (and decoder)."""
from __future__ import annotations

import contextlib
import random
import re

import hpack
import pytest

from dissectors.grpc.hpack_decoder import UNKNOWN, HpackError, TolerantDecoder


def blocks(n: int, seed: int = 1, huffman: bool = True) -> list[tuple[list[tuple[str, str]], bytes]]:
    """n gRPC-like header lists and their blocks from one hpack.Encoder (indexing everything)."""
    rng = random.Random(seed)
    enc = hpack.Encoder()
    out = []
    for i in range(n):
        h = [(":method", "POST"), (":scheme", "http"),
             (":path", "/apache.rocketmq.v2.MessagingService/" + rng.choice(["SendMessage", "Heartbeat",
                                                                               "AckMessage", "QueryRoute"])),
             (":authority", "127.0.0.1:8081"), ("content-type", "application/grpc"),
             ("x-mq-client-id", "vm@1@0@abc"), ("x-mq-request-id", f"req-{i}-{rng.random()}"),
             ("x-mq-date-time", f"20261121T19{i % 60:02d}01Z")]
        out.append((h, enc.encode(h, huffman=huffman)))
    return out


@pytest.mark.parametrize("huffman", [True, False])
def test_from_the_start_equals_the_reference_decoder(huffman):
    ref = hpack.Decoder()
    mine = TolerantDecoder()
    for h, block in blocks(300, huffman=huffman):
        hb = mine.decode(block)
        assert hb.headers == h == [(k, v) for k, v in ref.decode(block)]
        assert hb.unresolved == []
    assert mine.exact and mine.misses == 0


def test_cut_marks_unknown_entries_never_wrong_ones():
    bl = blocks(400, seed=7)
    dec = TolerantDecoder(cut=True)
    marked = 0
    for h, block in bl[40:]:
        hb = dec.decode(block)
        assert len(hb.headers) == len(h)
        for pos, (k, v) in enumerate(hb.headers):
            if (k, v) != h[pos]:  # anything wrong must be marked unknown, never silently wrong
                assert k == UNKNOWN and v in (UNKNOWN, h[pos][1])
                assert pos in {p for p, _ in hb.unresolved}
                marked += 1
    assert dec.misses > 0 and marked > 0  # the cut really hid entries
    assert dec.exact  # every entry from before the cut has been evicted


def test_learned_name_tokens_resolve_every_entry_that_carries_them():
    # hpack (like Netty) names a new x-mq-request-id entry by the newest one: without
    # learning, the unknown name would spread forever
    bl = blocks(400, seed=7)
    dec = TolerantDecoder(cut=True)
    exact_blocks = 0
    for h, block in bl[40:]:
        was_exact = dec.exact
        hb = dec.decode(block)
        if was_exact and not hb.unresolved:
            assert hb.headers == h
            exact_blocks += 1
        for pos, token in hb.unresolved:
            k, v = hb.headers[pos]
            if v != UNKNOWN and v.startswith("req-"):  # what the connection infers from a value's shape
                dec.learn_name(token, "x-mq-request-id")
            elif re.fullmatch(r"\d{8}T\d{6}Z", v):
                dec.learn_name(token, "x-mq-date-time")
    assert exact_blocks > 300  # exact again within a few dozen blocks


def test_backfilled_slot_resolves_later_references():
    enc = hpack.Encoder()
    path = ("/apache.rocketmq.v2.MessagingService/SendMessage")
    enc.encode([(":path", path)])  # inserted before the cut
    later = enc.encode([(":method", "POST"), (":path", path)])  # now an indexed reference
    dec = TolerantDecoder(cut=True)
    hb = dec.decode(later)
    assert hb.headers[1] == (UNKNOWN, UNKNOWN)
    (pos, slot), = hb.unresolved
    dec.learn(slot, ":path", path)
    again = enc.encode([(":path", path)])
    assert dec.decode(again).headers == [(":path", path)]


def test_index_past_the_table_without_a_cut_is_an_error_and_size_update_is_followed():
    dec = TolerantDecoder()
    with pytest.raises(HpackError):
        dec.decode(bytes([0x80 | 62]))  # dynamic index 62 with an empty table
    enc = hpack.Encoder()
    enc.header_table_size = 256  # emits a size update in the next block
    h = [("x-a", "1" * 100), ("x-b", "2" * 100), ("x-c", "3" * 100)]
    dec.decode(enc.encode(h))
    assert dec.max_size == 256
    assert dec.size <= 256 and [e[0] for e in dec.table] == ["x-c"]


def test_truncated_block_raises_not_crashes():
    block = hpack.Encoder().encode([("x-long-header", "v" * 50)])
    dec = TolerantDecoder()
    for cut in range(1, len(block)):
        with contextlib.suppress(HpackError):
            dec.decode(block[:cut])
        dec.reset()
