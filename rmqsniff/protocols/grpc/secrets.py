"""Where gRPC secrets stand on the wire, and what overwrites them in place.

What is a secret is :func:`dissectors.grpc.call.secret_spans` (``authorization``'s Credential
and Signature, session tokens, credential-looking values whose header name was lost).  A
header value reaches the wire as raw bytes or as an HPACK Huffman string; both forms are
given, each with a replacement of the same byte length that decodes to the same number of
characters, so HTTP/2 frame lengths and the HPACK dynamic table's size accounting stay as
they were.
"""
from __future__ import annotations

from dissectors.grpc.call import GrpcMessage, secret_spans
from dissectors.grpc.hpack_decoder import HUFFMAN_LENGTHS, huffman_encode

MASK = ord("*")
# stand-in characters by how many bits longer their Huffman code is than '0' (5 bits)
_LONGER = {0: b"0", 1: b"-", 2: b"x", 3: b"*", 5: b"!", 6: b"'", 7: b"#", 8: b"$", 9: b"^", 10: b"<", 14: b"\\"}
_DELTAS = sorted(_LONGER, reverse=True)


def masked_huffman(data: bytes, spans: list[tuple[int, int]], nbytes: int) -> bytes | None:
    """A Huffman string of exactly ``nbytes`` bytes decoding to ``data`` with the bytes in
    ``spans`` replaced by stand-ins (as many as there were), or None if none fits."""
    masked = [False] * len(data)
    for a, b in spans:
        masked[a:b] = [True] * (b - a)
    k = sum(masked)
    fixed = sum(HUFFMAN_LENGTHS[c] for c, m in zip(data, masked, strict=True) if not m)
    remaining = nbytes * 8 - fixed - 5 * k  # bits the stand-ins may add to 5 bits each
    if remaining < 0:
        return None
    out = bytearray(data)
    left = k
    for i, m in enumerate(masked):
        if not m:
            continue
        want = -(-remaining // left)  # spread the extra bits evenly
        d = next(d for d in _DELTAS if d <= min(want, remaining))
        out[i] = _LONGER[d][0]
        remaining -= d
        left -= 1
    if remaining > 7:  # more than the padding can take
        return None
    enc = huffman_encode(bytes(out))
    return enc if len(enc) == nbytes else None


def wire_secrets(cmd: GrpcMessage) -> list[list[tuple[bytes, bytes]]]:
    """For every secret header value of one side its forms (raw, Huffman-coded) as
    (as on the wire, same-length replacement)."""
    out: list[list[tuple[bytes, bytes]]] = []
    for k, v in (*cmd.headers, *cmd.trailers):
        spans = secret_spans(k, v)
        if not spans:
            continue
        raw = v.encode()
        bspans = [(len(v[:a].encode()), len(v[:b].encode())) for a, b in spans]
        masked = bytearray(raw)
        for a, b in bspans:
            masked[a:b] = bytes([MASK]) * (b - a)
        forms = [(raw, bytes(masked))]
        huff = huffman_encode(raw)
        red = masked_huffman(raw, bspans, len(huff))
        if red is not None:
            forms.append((huff, red))
        out.append(forms)
    return out
