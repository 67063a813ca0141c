"""benchmarks/real_voices.py's recipes: a file over DEFAULT_RECIPE, then ``--set SECTION.KEY=VALUE`` overrides
(one recipe file serves every seed and trainer of a round instead of near-copies)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_voices() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))  # real_voices.py imports _common as a sibling
    try:
        spec = importlib.util.spec_from_file_location("real_voices", ROOT / "benchmarks/real_voices.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_set_overrides_a_recipe_file_value_by_value(real_voices: ModuleType, tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(
        'name = "r"\ntask = "en-commands"\n[synth]\nper_class = 840\n'
        '[frontend]\ndelay_taps_ms = [0.0, 25.0]\n[train]\nepochs = 30\nmethod = "eventprop"\n'
    )
    plain = real_voices.load_recipe(recipe_file, False)
    recipe = real_voices.load_recipe(
        recipe_file,
        False,
        (
            "train.seed=1",
            "train.method=bptt",
            "train.lr=1e-3",
            "frontend.delay_taps_ms=[0.0, 50.0]",
            'name="r-seed1"',
            'synth.engines=["espeak-ng", "kokoro"]',
        ),
    )
    assert recipe["train"] == {"epochs": 30, "method": "bptt", "seed": 1, "lr": 1e-3}
    assert recipe["frontend"]["delay_taps_ms"] == [0.0, 50.0]
    assert recipe["name"] == "r-seed1" and recipe["synth"]["engines"] == ["espeak-ng", "kokoro"]
    # everything not named keeps the file's value, DEFAULT_RECIPE's below it
    assert recipe["synth"]["per_class"] == 840 == plain["synth"]["per_class"]
    assert recipe["import"] == plain["import"] == real_voices.DEFAULT_RECIPE["import"]
    assert plain["train"]["method"] == "eventprop" and "seed" not in plain["train"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.seed", "expected SECTION.KEY=VALUE"),
        ("train.=1", "expected SECTION.KEY=VALUE"),
        ("train.seed=", "expected SECTION.KEY=VALUE"),
        ("frontend.delay_taps_ms=[0.0, 25.0", "is not a TOML value"),
        ("train.lr=1e-3 x", "is not a TOML value"),
        ("name.first=x", "is a value"),
    ],
)
def test_a_malformed_set_says_what_is_wrong(real_voices: ModuleType, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        real_voices.load_recipe(None, False, (text,))


def test_sc_halves_split_the_speakers_evenly_and_deterministically(
    real_voices: ModuleType, tmp_path: Path
) -> None:
    """Protocol (d)'s halves: every Speech Commands speaker in exactly one, keyword clips balanced, FSDD and
    other sources ignored, the same halves whatever order the manifest lists its rows in."""
    keywords = {"yes", "no"}
    key = {"s1": 4, "s2": 3, "s3": 3, "s4": 2, "s5": 1, "s6": 0, "s7": 0}  # keyword clips per speaker
    other = {"s1": 1, "s2": 0, "s3": 2, "s4": 2, "s5": 0, "s6": 3, "s7": 1}  # and other words
    rows = [("fsdd-a", "fsdd", "zero")] * 5
    for s in key:
        rows += [(s, real_voices.SC_SOURCE, "yes")] * key[s] + [(s, real_voices.SC_SOURCE, "bed")] * other[s]
    lines = [
        "file,label,speaker,source",
        *(f"f{i}.flac,{lab},{s},{src}" for i, (s, src, lab) in enumerate(rows)),
    ]
    forward, backward = tmp_path / "a.csv", tmp_path / "b.csv"
    forward.write_text("\n".join(lines) + "\n")
    backward.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    a, b = real_voices.sc_halves(real_voices.sc_clip_counts(forward, keywords))
    assert sorted(a + b) == [f"s{i}" for i in range(1, 8)] and not set(a) & set(b)
    assert abs(sum(key[s] for s in a) - sum(key[s] for s in b)) <= 1
    assert real_voices.sc_halves(real_voices.sc_clip_counts(backward, keywords)) == (a, b)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"folds": [2]}, "folds must list 0, 1 or both"),
        ({"folds": []}, "folds must list 0, 1 or both"),
        ({"folds": 0}, "folds must list 0, 1 or both"),
        ({"train_words": "some"}, "train_words must be 'all' or 'keywords'"),
        ({"keyword_copies": -1}, "keyword_copies must be a whole number"),
        ({"keyword_copies": 1.5}, "keyword_copies must be a whole number"),
    ],
)
def test_sc_finetune_options_are_checked(real_voices: ModuleType, section: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        real_voices.sc_options({"sc_finetune": section})


def test_sc_finetune_options_leave_the_import_arguments(real_voices: ModuleType) -> None:
    section = {
        "augment": "recordings",
        "copies": 3,
        "folds": [1],
        "train_words": "keywords",
        "keyword_copies": 2,
    }
    assert real_voices.sc_options({"sc_finetune": section}) == (
        [1],
        "keywords",
        2,
        {"augment": "recordings", "copies": 3},
    )
    assert real_voices.sc_options({}) == ([0, 1], "all", 0, {})


@pytest.mark.parametrize("rotations", [[3], [], 0, [True], ["0"], [-1]])
def test_fsdd_finetune_rotations_are_checked(real_voices: ModuleType, rotations: object) -> None:
    with pytest.raises(ValueError, match=r"rotations must list some of 0, 1, 2 \(held out: lucas\+theo"):
        real_voices.fsdd_options({"fsdd_finetune": {"rotations": rotations}})


def test_fsdd_finetune_options_leave_the_import_arguments(real_voices: ModuleType) -> None:
    section = {"augment": "recordings", "copies": 3, "rotations": [2, 0]}
    assert real_voices.fsdd_options({"fsdd_finetune": section}) == (
        [2, 0],
        {"augment": "recordings", "copies": 3},
    )
    assert real_voices.fsdd_options({}) == ([0, 1, 2], {})


def _finished_run(folder: Path, config: dict, frontend: dict, status: str = "finished") -> Path:
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"config": config, "frontend": frontend, "status": status}))
    return folder


def test_a_finished_run_is_reused_only_for_the_same_settings(real_voices: ModuleType, tmp_path: Path) -> None:
    from edgekws.agent import FrontendSpec
    from edgekws.toolkit.train import TrainConfig

    config = TrainConfig.from_dict({"epochs": 30, "seed": 1234}).to_dict()
    plain = FrontendSpec().to_dict()
    run = _finished_run(tmp_path / "run", config, plain)
    real_voices.check_reusable(run, config, plain)  # the same settings: reused
    older = {k: v for k, v in config.items() if k != "time_shift_sources"}  # before that field existed
    real_voices.check_reusable(_finished_run(tmp_path / "older", older, plain), config, plain)
    with pytest.raises(SystemExit, match=r"config\.seed: run 1234, recipe 1\).*--work folder of its own"):
        real_voices.check_reusable(run, {**config, "seed": 1}, plain)
    tapped = FrontendSpec(delay_taps_ms=(0.0, 25.0)).to_dict()
    with pytest.raises(SystemExit, match=r"frontend\.delay_taps_ms: run 'default', recipe \[0\.0, 25\.0\]"):
        real_voices.check_reusable(run, config, tapped)
    with pytest.raises(SystemExit, match=r"has not finished training \(status 'running'"):
        real_voices.check_reusable(_finished_run(tmp_path / "going", config, plain, "running"), config, plain)
    real_voices.check_reusable(run, config, json.dumps(plain))  # a front-end recorded as JSON text
    with pytest.raises(SystemExit, match="records settings this version cannot read"):
        real_voices.check_reusable(_finished_run(tmp_path / "odd", {"epochs": "many"}, plain), config, plain)
