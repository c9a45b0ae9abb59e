from __future__ import annotations

import pytest

from harness.load.shapes import parse_shape
from harness.units import parse_duration, parse_tags, parse_versions


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("1.5m", 90.0), ("2h", 7200.0), ("250ms", 0.25), (3, 3.0)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5 days", "-3s", "1e3"])
def test_parse_duration_rejects_with_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="duration must be") as err:
        parse_duration(text)
    assert repr(text) in str(err.value)


def test_parse_tags() -> None:
    assert parse_tags(["team=ml", "release=1.4", "empty="]) == {
        "team": "ml",
        "release": "1.4",
        "empty": "",
    }
    with pytest.raises(ValueError, match="key=value.*'novalue'"):
        parse_tags(["novalue"])
    with pytest.raises(ValueError, match="key=value"):
        parse_tags(["bad key=1"])


def test_parse_versions() -> None:
    assert parse_versions(["fraud=v2", "churn=v1"]) == {"fraud": "v2", "churn": "v1"}
    assert parse_versions(None) == {}
    with pytest.raises(ValueError, match="MODEL=VERSION \\(got 'fraud'\\)"):
        parse_versions(["fraud"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), (" 2 m ", 120.0), (".5s", 0.5), ("1.", 1.0), (0, 0.0), (2.5, 2.5)],
)
def test_one_duration_grammar_for_options_and_shapes(text: str | float, seconds: float) -> None:
    # --duration and the durations inside --rate-shape are the same grammar (issue 13)
    assert parse_duration(text) == pytest.approx(seconds)
    spec = f"ramp:from=1,to=2,over={text}" if isinstance(text, str) else None
    if spec is not None and seconds > 0:
        assert parse_shape(spec).duration_s == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), True])
def test_parse_duration_rejects_bad_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="duration must be") as err:
        parse_duration(bad)
    assert repr(bad) in str(err.value)


def test_a_bad_duration_in_a_shape_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"shape ramp: over must be a number with an optional "
                                         r"unit ms, s, m or h.*\(got '5 days'\)"):
        parse_shape("ramp:over=5 days")
    assert parse_shape("spike:at=500ms,width=250ms").spec() == \
        "spike:at=0.5,base=5,duration=30,peak=50,width=0.25"


def test_what_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"^warmup must be .*\(got 'x'\)$"):
        parse_duration("x", what="warmup")
