"""The one serialization of every JSON line (investigate/output.py: json_bytes, json_line):
orjson where it can, json where orjson refuses, and the same bytes either way."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from auditd_lite.investigate import output
from auditd_lite.investigate.output import json_bytes, json_line

# what records, findings and summaries hold: no floats (orjson and json spell some differently,
# 1e-05 against 0.00001, the same number), strings of any code point but a lone surrogate
_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**64 - 1)
            | st.text() | st.binary())
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                       max_leaves=25)


def _as_json(value):
    """``value`` as json_bytes promises to write it: bytes as UTF-8 with backslash escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


def test_orjson_writes_them_here():
    """orjson is installed and loads (pyproject.toml requires it): the lines here are orjson's,
    not json's slower path, which is only for a tree whose wheels are another Python's."""
    assert output.JSON_LINES == "orjson"


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_the_line_is_jsons_compact_line(value):
    """For any value of the kinds records hold, json_bytes writes exactly what json.dumps writes
    with compact separators and ensure_ascii off, and a newline; json_line is the same text."""
    expected = json.dumps(_as_json(value), ensure_ascii=False, separators=(",", ":")) + "\n"
    assert json_bytes(value) == expected.encode("utf-8")
    assert json_line(value) == expected


def test_what_orjson_refuses_is_still_written():
    """An integer beyond 64 bits (orjson refuses it) is written by json, in the same layout; a
    lone surrogate is written with JSON's escapes as ASCII, and the line parses back to it."""
    big = {"n": 2**70, "m": -2**64, "s": "é"}
    assert json_bytes(big) == b'{"n":1180591620717411303424,"m":-18446744073709551616,"s":"\xc3\xa9"}\n'
    lone = {"argv": ["a\udc80b"]}
    line = json_bytes(lone)
    assert line == b'{"argv":["a\\udc80b"]}\n'
    assert json.loads(line) == lone
    assert json_line(lone, ascii_only=True) == '{"argv":["a\\udc80b"]}\n'


def test_datetimes_and_objects_are_their_str():
    """A datetime, or an object JSON has no type for, is written as str() gives it, as json's
    default did before orjson (orjson would write a datetime as RFC 3339 of its own)."""
    when = datetime(2026, 12, 7, 15, 4, 5, tzinfo=timezone.utc)
    assert json_bytes({"t": when, "p": object}) == ('{"t":"%s","p":"%s"}\n' % (when, object)).encode()


def test_one_line_whatever_the_strings_hold():
    """Newlines, control characters and U+2028 inside strings never end the line: a line is
    exactly one newline, at its end."""
    line = json_bytes({"argv": ["a\nb", "\r\x00\x1f", "\u2028\u2029", "\x7f"]})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert json.loads(line) == {"argv": ["a\nb", "\r\x00\x1f", "\u2028\u2029", "\x7f"]}
