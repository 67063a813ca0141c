"""benchmarks/_common.py's command_line: the command a results file records, to paste back into a shell."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def command_line(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the benchmarks import _common as a sibling
    import _common

    line: Callable[..., str] = _common.command_line
    return line


def test_quotes_arguments_so_the_shell_gives_them_back(
    command_line: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [
        str(ROOT / "benchmarks/real_voices.py"),
        "--set",
        'train.sources=["a b", "c"]',
        "--work",
        "runs/x y",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    line = command_line()
    assert line.startswith(".venv/bin/python benchmarks/real_voices.py ")
    assert shlex.split(line)[2:] == argv[1:]


def test_drops_the_named_options_and_their_values_in_both_spellings(
    command_line: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks/research/sc_rejection.py")])
    given = ["--note", "why: a b", "--seed", "1", "--note=other", "--notes", "kept", "--out", "r.json"]
    line = command_line(given, without=["--note"])
    kept = ["--seed", "1", "--notes", "kept", "--out", "r.json"]
    assert shlex.split(line) == [".venv/bin/python", "benchmarks/research/sc_rejection.py", *kept]


def test_a_script_outside_the_repository_is_shown_as_given(
    command_line: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "mine.py"), "-x"])
    assert shlex.split(command_line()) == [".venv/bin/python", str(tmp_path / "mine.py"), "-x"]
