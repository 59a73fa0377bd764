"""batch.multipart: round trips in any chunking, lazy file bodies, and hostile input."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch import multipart
from batch.multipart import Decoder, Headers, MultipartError, Part, decode, encode, new_boundary

BOUNDARY = "b0undary-test"

header_names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                       min_size=1, max_size=12)
header_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
headers = st.dictionaries(header_names, header_values, max_size=4).map(
    lambda d: {k: v for k, v in {k.lower(): (k, v) for k, v in d.items()}.values()})
bodies = st.binary(max_size=300)
parts_strategy = st.lists(st.tuples(headers, bodies), max_size=6)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(parts=parts_strategy, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_any_parts_round_trip_in_any_chunking(parts: list[tuple[dict[str, str], bytes]],
                                              cuts: list[int]) -> None:
    boundary = new_boundary()
    data = b"".join(encode(parts, boundary))
    decoded = list(decode(split(data, cuts), boundary))
    assert [(dict(p.headers.items()), p.body) for p in decoded] == \
        [({k: v.strip() for k, v in h.items()}, b) for h, b in parts]


@settings(max_examples=100)
@given(parts=parts_strategy)
def test_push_decoder_yields_each_part_as_soon_as_it_is_complete(
        parts: list[tuple[dict[str, str], bytes]]) -> None:
    boundary = new_boundary()
    decoder = Decoder(boundary)
    seen = 0
    for chunk in encode(parts, boundary):
        seen += len(decoder.feed(chunk))
    # The encoder's chunk after a body (CRLF) is not enough: the next delimiter
    # line must arrive; by the closing delimiter every part is out.
    assert seen == len(parts)
    decoder.close()
    assert decoder.done


@settings(max_examples=200)
@given(parts=st.lists(st.tuples(headers, bodies), min_size=1, max_size=4), data=st.data())
def test_truncated_input_raises_multipart_error(parts: list[tuple[dict[str, str], bytes]],
                                                data: st.DataObject) -> None:
    encoded = b"".join(encode(parts, BOUNDARY))
    # Dropping the final CRLF still leaves the closing delimiter; any earlier cut does not.
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 3))
    with pytest.raises(MultipartError, match="truncated multipart input"):
        list(decode([encoded[:cut]], BOUNDARY))


@settings(max_examples=500, deadline=1000)
@given(junk=st.binary(max_size=400), cuts=st.lists(st.integers(0, 500), max_size=8))
def test_fuzzed_bytes_give_parts_or_multipart_error_only(junk: bytes, cuts: list[int]) -> None:
    try:
        list(decode(split(junk, cuts), "ab"))
    except MultipartError:
        pass


@settings(max_examples=500, deadline=1000)
@given(parts=st.lists(st.tuples(headers, bodies), min_size=1, max_size=3),
       edits=st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=0, max_size=4)), min_size=1,
                      max_size=4),
       cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_mutated_encodings_give_parts_or_multipart_error_only(
        parts: list[tuple[dict[str, str], bytes]], edits: list[tuple[int, bytes]], cuts: list[int]) -> None:
    data = bytearray(b"".join(encode(parts, "xy")))
    for at, replacement in edits:
        at %= len(data) + 1
        data[at:at + len(replacement)] = replacement
    try:
        result = list(decode(split(bytes(data), cuts), "xy"))
    except MultipartError:
        return
    assert all(isinstance(p.body, bytes) for p in result)


def test_file_like_body_is_read_lazily_in_pieces() -> None:
    class Spy(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.reads: list[int] = []

        def read(self, size: int | None = -1) -> bytes:
            self.reads.append(-1 if size is None else size)
            return super().read(size)

    size = 3 * multipart.READ_SIZE + 5
    body = Spy(b"x" * size)
    chunks = encode([({"A": "1"}, body), ({}, b"tail")], BOUNDARY)
    assert body.reads == []                          # nothing read before the chunks are asked for
    head = next(chunks)
    assert head == f"--{BOUNDARY}\r\nA: 1\r\n\r\n".encode() and body.reads == []
    first = next(chunks)
    assert len(first) == multipart.READ_SIZE and body.reads == [multipart.READ_SIZE]
    rest = list(chunks)
    assert body.reads == [multipart.READ_SIZE] * 5   # four pieces and the empty read at the end
    assert len(first) + sum(len(c) for c in rest[:3]) == size
    decoded = list(decode([head, first, *rest], BOUNDARY))
    assert [p.body for p in decoded] == [b"x" * size, b"tail"]


def test_exact_wire_format() -> None:
    data = b"".join(encode([Part({"Content-Type": "application/http", "Content-ID": "<1>"}, b"GET / HTTP/1.1"
                                                                                         b"\r\n\r\n"),
                            ({}, b"")], "BND"))
    assert data == (b"--BND\r\nContent-Type: application/http\r\nContent-ID: <1>\r\n\r\n"
                    b"GET / HTTP/1.1\r\n\r\n\r\n"
                    b"--BND\r\n\r\n\r\n"
                    b"--BND--\r\n")
    assert multipart.encoded_length([Part({"Content-Type": "application/http", "Content-ID": "<1>"},
                                          b"GET / HTTP/1.1\r\n\r\n"), Part({}, b"")], "BND") == len(data)


def test_preamble_epilogue_and_transport_padding_are_ignored() -> None:
    data = (b"this is the preamble\r\n--BND  \t\r\nA: 1\r\n\r\none\r\n--BND\r\n\r\ntwo"
            b"\r\n--BND--\r\nepilogue -- anything\r\n--BND\r\n")
    for size in (1, 2, 3, 7, len(data)):
        parts = list(decode([data[i:i + size] for i in range(0, len(data), size)], "BND"))
        assert parts == [Part({"a": "1"}, b"one"), Part({}, b"two")]


def test_folded_and_repeated_headers() -> None:
    data = b"--B\r\nX-A: one\r\n  two\r\nX-B: 1\r\nx-b: 2\r\n\r\nbody\r\n--B--"
    (part,) = decode([data], "B")
    assert dict(part.headers.items()) == {"X-A": "one two", "X-B": "1, 2"}


@pytest.mark.parametrize("data, message", [
    (b"--B\r\nno colon here\r\n\r\nx\r\n--B--", "malformed header line b'no colon here'"),
    (b"--B\r\nBad Name: 1\r\n\r\nx\r\n--B--", "malformed header line"),
    (b"--B\r\n  folded: first\r\n\r\nx\r\n--B--", "starts with a continuation line"),
    (b"--B\r\n\r\nx\r\n--Bogus\r\n\r\n--B--", "must be followed by CRLF or '--'"),
    (b"--BXY", "must be followed by CRLF or '--'"),
    (b"--B\r\n\r\nbody without end", "ended inside a part's body"),
    (b"--B\r\nA: 1\r\n", "ended inside a part's headers"),
    (b"no delimiter at all", "ended before the first delimiter"),
    (b"", "ended before the first delimiter"),
])
def test_malformed_input_messages(data: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        list(decode([data], "B"))


def test_header_block_is_bounded_without_waiting_for_the_end() -> None:
    decoder = Decoder("B", max_header_bytes=1000)
    decoder.feed(b"--B\r\nX: ")
    with pytest.raises(MultipartError, match="headers are longer than 1000 bytes"):
        decoder.feed(b"a" * 2000)
    with pytest.raises(MultipartError, match="already failed"):
        decoder.feed(b"more")


def test_decoder_buffers_at_most_a_delimiter_beyond_the_body() -> None:
    decoder = Decoder("B")
    decoder.feed(b"--B\r\n\r\n")
    for _ in range(100):
        assert decoder.feed(b"y" * 10_000) == []
        assert len(decoder._buf) < 8             # the rest moved into the part's body pieces
    (part,) = decoder.feed(b"\r\n--B--\r\n")
    assert part.body == b"y" * 1_000_000


def test_data_after_the_closing_delimiter_is_ignored() -> None:
    decoder = Decoder("B")
    assert decoder.feed(b"--B\r\n\r\nx\r\n--B--") == [Part({}, b"x")]
    assert decoder.feed(b"--B\r\n\r\nmore\r\n--B--") == []
    decoder.close()


@pytest.mark.parametrize("headers, message", [
    ({"X-Evil": "a\r\nInjected: 1"}, r"invalid value for header 'X-Evil'.*no CR, LF or NUL"),
    ({"X-Evil\r\n": "a"}, "invalid header name 'X-Evil\\\\r\\\\n'"),
    ({"": "a"}, "invalid header name ''"),
    ({"Spaced Name": "a"}, "invalid header name 'Spaced Name'"),
])
def test_encoder_refuses_headers_that_break_framing(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(encode([(headers, b"x")], BOUNDARY))


def test_encoder_refuses_a_body_containing_the_delimiter() -> None:
    with pytest.raises(ValueError, match="body contains the multipart delimiter"):
        list(encode([({}, b"abc\r\n--" + BOUNDARY.encode() + b"--\r\n")], BOUNDARY))
    big = io.BytesIO(b"z" * (multipart.READ_SIZE - 3) + b"\r\n--" + BOUNDARY.encode())  # split across reads
    with pytest.raises(ValueError, match="body contains the multipart delimiter"):
        list(encode([({}, big)], BOUNDARY))


@pytest.mark.parametrize("boundary", ["", "a" * 71, "ends with space ", "semi;colon", 5])
def test_invalid_boundaries_are_refused(boundary: object) -> None:
    with pytest.raises(ValueError, match="invalid multipart boundary"):
        list(encode([], boundary))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid multipart boundary"):
        Decoder(boundary)  # type: ignore[arg-type]


def test_encoder_rejects_text_bodies_and_other_items() -> None:
    with pytest.raises(TypeError, match="a part body must be bytes or a binary file-like object, got str"):
        list(encode([({}, "text")], BOUNDARY))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="takes Part objects or \\(headers, body\\) pairs"):
        list(encode([b"raw"], BOUNDARY))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="opened in binary mode"):
        list(encode([({}, io.StringIO("text"))], BOUNDARY))  # type: ignore[list-item]


def test_parse_boundary() -> None:
    assert multipart.parse_boundary('multipart/mixed; boundary="===15=="') == "===15=="
    assert multipart.parse_boundary("Multipart/Mixed;charset=x; Boundary=abc") == "abc"
    with pytest.raises(MultipartError, match="expected Content-Type multipart/mixed, got 'text/plain'"):
        multipart.parse_boundary("text/plain")
    with pytest.raises(MultipartError, match="has no boundary parameter"):
        multipart.parse_boundary("multipart/mixed")
    with pytest.raises(MultipartError, match="invalid multipart boundary"):
        multipart.parse_boundary('multipart/mixed; boundary=""')


def test_headers_are_case_insensitive_and_keep_first_spelling() -> None:
    h = Headers([("Content-Type", "a")])
    h["CONTENT-TYPE"] = "b"
    assert h["content-type"] == "b" and list(h) == ["Content-Type"] and "content-TYPE" in h
    assert h == {"content-type": "b"}
    del h["Content-type"]
    assert len(h) == 0


def test_new_boundary_is_random_and_valid() -> None:
    a, b = new_boundary(), new_boundary()
    assert a != b and a.startswith("batch_") and len(a) == 38
    Decoder(a)


@settings(max_examples=300, deadline=1000)
@given(parts=st.lists(st.tuples(headers, bodies), max_size=4),
       edits=st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=4)), max_size=3),
       cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_chunking_never_changes_the_outcome(parts: list[tuple[dict[str, str], bytes]],
                                            edits: list[tuple[int, bytes]], cuts: list[int]) -> None:
    data = bytearray(b"".join(encode(parts, "q")))
    for at, replacement in edits:
        at %= len(data) + 1
        data[at:at + len(replacement)] = replacement

    def outcome(chunks: list[bytes]) -> object:
        try:
            return list(decode(chunks, "q"))
        except MultipartError:
            return "MultipartError"

    assert outcome(split(bytes(data), cuts)) == outcome([bytes(data)])
