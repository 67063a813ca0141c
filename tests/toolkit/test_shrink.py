"""EDGEKWS_SHRINK only lowers the sizes it names, says so, and refuses a value it cannot read."""

from __future__ import annotations

import click
import pytest

from edgekws.toolkit._shrink import ENV, caps, limit, shrink


def test_caps_lower_sizes_and_say_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cap below the size wins (on stderr); a cap above it, or an unset knob, changes nothing."""
    monkeypatch.setenv(ENV, " per-class=3 , epochs=1 ")
    assert caps() == {"per-class": 3, "epochs": 1}
    assert shrink("per-class", 300) == 3
    assert "per-class 300 -> 3" in capsys.readouterr().err
    assert shrink("per-class", 2) == 2 and shrink("epochs", 1) == 1
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(ENV, "epochs=2")
    assert shrink("per-class", 300) == 300
    monkeypatch.setenv(ENV, "recordings=2")
    assert limit("recordings") == 2 and "all -> 2" in capsys.readouterr().err
    monkeypatch.setenv(ENV, "")
    assert caps() == {} and shrink("epochs", 30) == 30 and limit("recordings") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [("hidden=8", "unknown size 'hidden'"), ("epochs=x", "positive whole number"), ("epochs=0", "positive")],
)
def test_a_value_it_cannot_read_is_refused(value: str, message: str) -> None:
    """Unknown knobs and non-positive or non-numeric caps are usage errors naming the variable."""
    with pytest.raises(click.UsageError, match=message) as exc:
        caps({ENV: value})
    assert ENV in str(exc.value)
