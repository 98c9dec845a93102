"""Settings from `TRIPSCORE_*` variables: every value a process writes for its children reads back the same, and a
value that is not a number or a boolean, or a number out of its setting's range, is refused with one line naming
the variable, never a traceback."""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runtime.config import BOUNDS, ENV_PREFIX, Bound, Settings, SettingsError, out_of_range, retired_settings
from runtime.processes import settings_env
from streaming.job import OPTION_SETTINGS, BadOption, StreamOptions
from tripscore.cli import main

ENV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
"""What an environment variable can hold."""
PARSED = {f.name: f.type for f in fields(Settings) if f.type in ("int", "float", "bool")}
BIG = 10**12


def _in_range(kind: str, bound: Bound | None) -> st.SearchStrategy[Any]:
    """Values of a setting of type `kind` within `bound` (any, unbounded)."""
    low, high, open_low = bound or (-BIG, None, False)
    if kind == "int":
        return st.integers(math.floor(low) + 1 if open_low else math.ceil(low), BIG if high is None else int(high))
    return st.floats(low, BIG if high is None else high, exclude_min=open_low)


VALUES = {
    "bool": st.booleans(),
    "str": ENV_TEXT,
    "Path": ENV_TEXT.map(Path),
    "Path | None": st.none() | ENV_TEXT.filter(bool).map(Path),
}


def _values(name: str, kind: str) -> st.SearchStrategy[Any]:
    return _in_range(kind, BOUNDS.get(name)) if kind in ("int", "float") else VALUES[kind]


def _settings_under(env: dict[str, str]) -> Settings:
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


def test_every_field_has_a_value_strategy_and_every_number_a_range() -> None:
    assert {f.type for f in fields(Settings)} <= set(VALUES) | {"int", "float"}
    assert set(PARSED.values()) == {"int", "float", "bool"}
    assert set(BOUNDS) == {name for name, kind in PARSED.items() if kind != "bool"}


@given(st.fixed_dictionaries({f.name: _values(f.name, f.type) for f in fields(Settings)}))
def test_settings_written_for_a_child_process_read_back_the_same(values: dict[str, Any]) -> None:
    written = Settings(**values)
    assert _settings_under(settings_env(vars(written))) == written


@given(st.sampled_from(sorted(PARSED)),
       st.one_of(ENV_TEXT, st.integers(-(10**6), 10**6).map(str), st.floats().map(repr)))
@example("verbose", "False")  # str(False), as a parent writes it: read as True before the flag had its own parser
@example("verbose", " OFF ")
@example("verbose", "maybe")
@example("kafka_partitions", "4.0")
@example("store_deadline_ms", "nan")
@example("stream_lateness_s", "-0.5")
@example("scorer_web_port", "65536")
@example("store_deadline_ms", "0")
def test_a_parsed_setting_is_its_type_in_its_range_or_refused_naming_the_variable(name: str, text: str) -> None:
    variable = ENV_PREFIX + name.upper()
    try:
        value = getattr(_settings_under({variable: text}), name)
    except SettingsError as exc:
        if not str(exc).startswith(f"{variable}={text!r} is not "):  # a number, out of its range
            number = float(text) if PARSED[name] == "float" else int(text)
            assert str(exc) == f"{variable} {out_of_range(name, number)}"
        return
    if name in BOUNDS:
        assert out_of_range(name, value) is None
    kind = PARSED[name]
    if kind == "bool":
        assert value is (text.strip().lower() in ("1", "true", "yes", "on"))
    elif kind == "float":
        assert type(value) is float and value == float(text) and value - value == 0.0
    else:
        assert type(value) is int and value == int(text)


@pytest.mark.parametrize(("variable", "value", "line"), [
    ("TRIPSCORE_STREAM_TRIGGER_MS", "1s", "TRIPSCORE_STREAM_TRIGGER_MS='1s' is not an integer"),
    ("TRIPSCORE_STORE_DEADLINE_MS", "inf", "TRIPSCORE_STORE_DEADLINE_MS='inf' is not a finite number"),
    ("TRIPSCORE_VERBOSE", "maybe", "TRIPSCORE_VERBOSE='maybe' is not a boolean (1/0, true/false, yes/no, on/off)"),
    ("TRIPSCORE_SCORER_CONCURRENCY", "0", "TRIPSCORE_SCORER_CONCURRENCY must be at least 1, got 0"),
])
def test_the_cli_refuses_a_malformed_setting_with_one_line_and_exit_code_2(
        variable: str, value: str, line: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["kafka", "status"]) == 2
    assert capsys.readouterr().err == f"tripscore kafka: {line}\n"


def test_a_flag_out_of_range_is_refused_naming_its_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--concurrency", "-1"]) == 2  # Faust failed after start-up with an AssertionError
    assert capsys.readouterr().err == "tripscore score: TRIPSCORE_SCORER_CONCURRENCY must be at least 1, got -1\n"


@pytest.mark.parametrize("option", sorted(OPTION_SETTINGS))
def test_a_stream_flag_out_of_its_settings_range_is_refused_naming_both(option: str) -> None:
    setting = OPTION_SETTINGS[option]
    bound = BOUNDS[setting]
    below = bound.low if bound.open_low else bound.low - 1
    with pytest.raises(BadOption) as refused:
        StreamOptions.from_settings(Settings(), **{option: below})
    flag = "--" + option.replace("_", "-")
    assert str(refused.value) == f"{flag} ({ENV_PREFIX}{setting.upper()}) {out_of_range(setting, below)}"


def test_a_retired_setting_that_is_set_gets_one_line_naming_its_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPSCORE_STREAM_WATERMARK_S", "10")
    monkeypatch.delenv("TRIPSCORE_STREAM_STATE_BUCKETS", raising=False)
    assert retired_settings() == ["TRIPSCORE_STREAM_WATERMARK_S is no longer read: lateness is judged per driver "
                                  "now: set TRIPSCORE_STREAM_LATENESS_S"]
