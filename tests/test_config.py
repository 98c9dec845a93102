"""Settings from `TRIPSCORE_*` variables: every value a process writes for its children reads back the same, and a
value that is not a number or a boolean is refused with one line naming the variable, never a traceback."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runtime.config import ENV_PREFIX, Settings, SettingsError
from runtime.processes import settings_env
from tripscore.cli import main

ENV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
"""What an environment variable can hold."""
PARSED = {f.name: f.type for f in fields(Settings) if f.type in ("int", "float", "bool", "int | None")}
VALUES = {
    "int": st.integers(-(10**12), 10**12),
    "int | None": st.none() | st.integers(-(10**12), 10**12),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "bool": st.booleans(),
    "str": ENV_TEXT,
    "Path": ENV_TEXT.map(Path),
    "Path | None": st.none() | ENV_TEXT.filter(bool).map(Path),
}


def _settings_under(env: dict[str, str]) -> Settings:
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


def test_every_field_has_a_value_strategy() -> None:
    assert {f.type for f in fields(Settings)} <= set(VALUES)
    assert set(PARSED.values()) == {"int", "float", "bool", "int | None"}


@given(st.fixed_dictionaries({f.name: VALUES[f.type] for f in fields(Settings)}))
def test_settings_written_for_a_child_process_read_back_the_same(values: dict[str, Any]) -> None:
    written = Settings(**values)
    assert _settings_under(settings_env(vars(written))) == written


@given(st.sampled_from(sorted(PARSED)), ENV_TEXT)
@example("verbose", "False")  # str(False), as a parent writes it: read as True before the flag had its own parser
@example("verbose", " OFF ")
@example("verbose", "maybe")
@example("kafka_partitions", "4.0")
@example("store_deadline_ms", "nan")
@example("stream_state_buckets", "")
def test_a_parsed_setting_is_its_type_or_refused_naming_the_variable(name: str, text: str) -> None:
    variable = ENV_PREFIX + name.upper()
    try:
        value = getattr(_settings_under({variable: text}), name)
    except SettingsError as exc:
        assert str(exc).startswith(f"{variable}={text!r} is not "), exc
        return
    kind = PARSED[name]
    if kind == "bool":
        assert value is (text.strip().lower() in ("1", "true", "yes", "on"))
    elif kind == "float":
        assert type(value) is float and value == float(text) and value - value == 0.0
    elif kind == "int | None" and not text:
        assert value is None
    else:
        assert type(value) is int and value == int(text)


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("TRIPSCORE_STREAM_TRIGGER_MS", "1s", "is not an integer"),
    ("TRIPSCORE_STORE_DEADLINE_MS", "inf", "is not a finite number"),
    ("TRIPSCORE_VERBOSE", "maybe", "is not a boolean (1/0, true/false, yes/no, on/off)"),
])
def test_the_cli_refuses_a_malformed_setting_with_one_line_and_exit_code_2(
        variable: str, value: str, problem: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["kafka", "status"]) == 2
    assert capsys.readouterr().err == f"tripscore kafka: {variable}={value!r} {problem}\n"
