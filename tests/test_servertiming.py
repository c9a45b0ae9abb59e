"""Server-Timing parsing: W3C examples, malformed input, and generated round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.load.servertiming import ServerTimingError, format_server_timing, parse_server_timing


def test_design_example():
    header = "fetch;dur=1.204, infer;dur=3.870, serialize;dur=0.211, app;dur=5.402"
    assert parse_server_timing(header) == {
        "fetch": 1.204, "infer": 3.870, "serialize": 0.211, "app": 5.402}


def test_params_in_any_order_and_quoted_desc_with_commas():
    header = 'db;desc="query, with; commas";dur=53, cache;dur=0.1;desc=hit'
    assert parse_server_timing(header) == {"db": 53.0, "cache": 0.1}


def test_entries_without_dur_are_skipped():
    assert parse_server_timing('miss, cdn;desc="edge", total;dur=2') == {"total": 2.0}


def test_repeated_names_are_summed():
    assert parse_server_timing("db;dur=2, db;dur=3.5") == {"db": 5.5}


def test_only_the_first_dur_of_one_metric_counts():
    assert parse_server_timing("x;dur=1;dur=9") == {"x": 1.0}


def test_whitespace_empty_elements_and_case_of_dur():
    assert parse_server_timing(" a ; DUR = 1.5 ,, b;dur=2 ") == {"a": 1.5, "b": 2.0}
    assert parse_server_timing("") == {}


@pytest.mark.parametrize("header", [
    "a;dur=fast",            # not a number
    "a;dur=-1",              # negative
    "a;dur=nan",             # not finite
    "a;dur",                 # dur without value
    "a b;dur=1",             # space inside a name
    'a;desc="unterminated',  # open quote
    "a;dur=1;",              # dangling semicolon
    '"a";dur=1',             # quoted name
    "a;dur=1\n",             # newline
])
def test_malformed_raises_a_value_error_naming_the_input(header):
    with pytest.raises(ServerTimingError) as err:
        parse_server_timing(header)
    assert isinstance(err.value, ValueError)
    assert "Server-Timing" in str(err.value)


def test_non_string_is_rejected():
    with pytest.raises(ServerTimingError):
        parse_server_timing(None)  # type: ignore[arg-type]


_TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.!#$%&'*+^`|~"
_TOKEN = st.text(alphabet=_TCHAR, min_size=1, max_size=12)
_DESC = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
_MS = st.integers(min_value=0, max_value=10**9).map(lambda us: us / 1000)


@st.composite
def _metrics(draw):
    n = draw(st.integers(min_value=0, max_value=6))
    items = []
    for _ in range(n):
        name = draw(_TOKEN)
        dur = draw(st.one_of(st.none(), _MS))
        desc = draw(st.one_of(st.none(), _DESC))
        dur_first = draw(st.booleans())
        items.append((name, dur, desc, dur_first))
    return items


def _render(items) -> str:
    parts = []
    for name, dur, desc, dur_first in items:
        params = []
        if dur is not None:
            params.append(f"dur={dur:.3f}")
        if desc is not None:
            quoted = '"' + desc.replace("\\", "\\\\").replace('"', '\\"') + '"'
            params.insert(0 if not dur_first else len(params), f"desc={quoted}")
        parts.append(";".join([name, *params]))
    return ", ".join(parts)


@settings(max_examples=150, deadline=None)
@given(_metrics())
def test_round_trip_of_generated_headers(items):
    expected: dict[str, float] = {}
    for name, dur, _desc, _ in items:
        if dur is not None:
            expected[name] = expected.get(name, 0.0) + float(f"{dur:.3f}")
    got = parse_server_timing(_render(items))
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        # Sums of 3-decimal floats: exact to well below the microsecond the header carries.
        assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_TOKEN, _MS, max_size=6), st.dictionaries(_TOKEN, _DESC, max_size=3))
def test_format_then_parse_is_identity_at_microsecond_resolution(stages, desc):
    got = parse_server_timing(format_server_timing(stages, desc))
    assert {k: round(v * 1000) for k, v in got.items()} == {
        k: round(v * 1000) for k, v in stages.items()}


def test_format_rejects_bad_names_and_durations():
    with pytest.raises(ValueError, match="token"):
        format_server_timing({"a b": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        format_server_timing({"a": -1.0})
