"""The HPACK static table and Huffman decoder written in dissectors/grpc/hpack_decoder.py
(RFC 7541 Appendices A and B), checked against the RFC's own examples and the ``hpack``
package's public Encoder/Decoder (never its internals)."""
from __future__ import annotations

import random

import hpack
import pytest

from dissectors.grpc.hpack_decoder import STATIC, HpackError, TolerantDecoder, _int, huffman_decode

# RFC 7541 Appendix C.4 and C.6: Huffman-coded strings of its request and response examples
RFC_EXAMPLES = [
    ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
    ("a8eb10649cbf", "no-cache"),
    ("25a849e95ba97d7f", "custom-key"),
    ("25a849e95bb8e8b4bf", "custom-value"),
    ("6402", "302"),
    ("aec3771a4b", "private"),
    ("d07abe941054d444a8200595040b8166e082a62d1bff", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("9d29ad171863c78f0b97c8e9ae82ae43d3", "https://www.example.com"),
    ("640eff", "307"),
    ("94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
     "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
]


@pytest.mark.parametrize("hexed,text", RFC_EXAMPLES)
def test_rfc_examples(hexed, text):
    assert huffman_decode(bytes.fromhex(hexed)) == text.encode()


def test_static_table_matches_the_reference_decoder():
    assert len(STATIC) == 61
    for i, entry in enumerate(STATIC, 1):
        [(name, value)] = hpack.Decoder().decode(bytes([0x80 | i]))  # indexed field i
        assert (name, value) == entry
        assert TolerantDecoder().decode(bytes([0x80 | i])).headers == [entry]


def _huffman_string(value: bytes) -> bytes:
    """The Huffman string hpack's public Encoder writes for ``value`` (a new-name literal)."""
    block = hpack.Encoder().encode([(b"x-v", value)], huffman=True)
    assert block[0] == 0x40  # literal with incremental indexing, new name
    ln, pos = _int(block, 1, 7)  # the name
    assert block[pos + ln] & 0x80  # the value is Huffman-coded
    ln, pos = _int(block, pos + ln, 7)
    assert pos + ln == len(block)
    return block[pos:]


def test_every_symbol_and_random_strings_round_trip():
    for b in range(256):
        for value in (bytes([b]), bytes([b]) * 3, b"a" + bytes([b]) + b"zz"):
            assert huffman_decode(_huffman_string(value)) == value
    rng = random.Random(5)
    for _ in range(2000):
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 50)))
        assert huffman_decode(_huffman_string(value)) == value
    assert huffman_decode(b"") == b""


@pytest.mark.parametrize("bad", [
    "ff",          # 8 bits of padding (at most 7 allowed)
    "fffffffc",    # EOS (30 ones) inside the string
    "00",          # '0' (00000) then padding 000, not all ones
    "f1e3c2e5f23a6ba0ab90f4fe",  # www.example.com with a 0 in the padding
    "fe",          # a 10-bit code cut off by the end
])
def test_invalid_strings_raise(bad):
    with pytest.raises(HpackError):
        huffman_decode(bytes.fromhex(bad))
    with pytest.raises(hpack.HPACKDecodingError):  # the reference agrees it is invalid
        hpack.Decoder().decode(bytes([0x04, 0x80 | len(bytes.fromhex(bad))]) + bytes.fromhex(bad))
