"""Presets: every bundled preset validates; bad ones are refused with a precise message."""

from __future__ import annotations

import pytest

from dynlab import presets
from dynlab.presets import PresetError, parse

GOOD = """
format_version = 1
engine = "quadratic"
title = "t"
summary = "s"
paper = "p"
[run]
steps = 10
[hyperparameters]
lr = 0.1
[[views]]
streams = ["train_loss"]
"""


@pytest.mark.parametrize("path", presets.list_presets(), ids=lambda p: p.stem)
def test_every_bundled_preset_validates(path):
    p = presets.load(str(path))
    assert p.title and p.summary and p.paper
    assert p.views, "a preset should say which views to open"


def test_good_preset_parses():
    p = parse(GOOD, path="x.toml")
    assert p.engine == "quadratic" and p.steps == 10 and p.hyperparameters == {"lr": 0.1}


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            ("lr = 0.1", "lrr = 0.1"),
            "x.toml: hyperparameters.lrr: unknown hyperparameter of engine 'quadratic' (did you mean 'lr'?)",
        ),
        (("lr = 0.1", 'lr = "fast"'), "x.toml: hyperparameters.lr must be a number, got 'fast'"),
        (("lr = 0.1", "lr = 50.0"), "x.toml: hyperparameters.lr = 50.0 is above its maximum 10.0"),
        (("lr = 0.1", "lr = -1.0"), "x.toml: hyperparameters.lr = -1.0 is below its minimum 0.0"),
        (
            ('engine = "quadratic"', 'engine = "quadratik"'),
            "x.toml: engine: unknown engine 'quadratik' (did you mean 'quadratic'?)",
        ),
        (
            ("format_version = 1", "format_version = 99"),
            "x.toml: format_version: 99 is newer than this dynlab understands (1)",
        ),
        (('title = "t"', ""), "x.toml: title: missing (expected string)"),
        (("steps = 10", "stpes = 10"), "x.toml: run.stpes: unknown key (did you mean 'steps'?)"),
        (("steps = 10", 'steps = "10"'), "x.toml: run.steps: expected int, got '10'"),
        (
            ('streams = ["train_loss"]', 'streams = ["train_los"]'),
            "x.toml: views[0].streams: engine 'quadratic' has no stream 'train_los' (did you mean 'train_loss'?)",
        ),
        (("[run]", "[rnu]"), "x.toml: rnu: unknown key (did you mean 'run'?)"),
    ],
)
def test_bad_preset_is_refused_with_file_key_and_expectation(edit, expected):
    old, new = edit
    with pytest.raises(PresetError) as info:
        parse(GOOD.replace(old, new), path="x.toml")
    assert expected in str(info.value)


def test_toml_syntax_error_names_the_line():
    with pytest.raises(PresetError, match=r"x.toml: not valid TOML: .*line 3"):
        parse('format_version = 1\nengine = "quadratic"\ntitle = = "t"\n', path="x.toml")


def test_unknown_preset_name_suggests():
    with pytest.raises(PresetError, match="no preset named 'quadratc' \\(did you mean 'quadratic'\\?\\)"):
        presets.load("quadratc")


def test_overrides_are_validated():
    p = parse(GOOD, path="x.toml")
    assert p.with_overrides(hyperparameters={"lr": "0.3"}).hyperparameters["lr"] == 0.3
    with pytest.raises(Exception, match="--set lr: lr = 11.0 is above its maximum"):
        p.with_overrides(hyperparameters={"lr": "11"})
    with pytest.raises(Exception, match="no hyperparameter 'lrr' \\(did you mean 'lr'\\?\\)"):
        p.with_overrides(hyperparameters={"lrr": "0.1"})


def test_overrides_change_only_what_they_name():
    p = parse(GOOD, path="x.toml")
    q = p.with_overrides(steps=50, seed=3, device="cpu")
    assert (q.steps, q.seed, q.device) == (50, 3, "cpu")
    assert (q.name, q.text, q.engine, q.title, q.views, q.tags) == (
        p.name,
        p.text,
        p.engine,
        p.title,
        p.views,
        p.tags,
    )
    assert q.hyperparameters == p.hyperparameters and q.hyperparameters is not p.hyperparameters
    assert p.with_overrides() == p


def test_view_keys_are_the_fields_of_viewspec():
    import dataclasses

    from dynlab.viewspec import ViewSpec

    values = {"list": '["train_loss"]', "str": '"lines"', "bool": "true"}
    types = presets._VIEW_KEYS
    assert list(types) == [f.name for f in dataclasses.fields(ViewSpec)]
    choices = ("reference", "sort_cols")  # values checked against streams / a list of words
    table = "\n".join(f"{k} = {values[t.__name__]}" for k, t in types.items() if k not in choices)
    view = parse(GOOD.replace('streams = ["train_loss"]', table), path="x.toml").views[0]
    assert view == ViewSpec("lines", ("train_loss",), "lines", True, True, "", "lines", True)
    with pytest.raises(PresetError) as info:
        parse(
            GOOD.replace('streams = ["train_loss"]', 'streams = ["train_loss"]\nlog_z = true'), path="x.toml"
        )
    assert f"expected one of {', '.join(f.name for f in dataclasses.fields(ViewSpec))}" in str(info.value)
