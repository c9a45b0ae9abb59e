from __future__ import annotations

import pytest

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
