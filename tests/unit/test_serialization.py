"""JSON round-trip checks of arguments and results: what is refused, and how it is named."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from django_ray.serialization import NotJSONSerializable, check_json, dumps


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        (object(), "args[0]", "builtins.object"),
        ({1, 2}, "args[0]", "builtins.set"),
        (float("nan"), "args[0]", "nan"),
        (float("inf"), "args[0]", "inf"),
        (float("-inf"), "args[0]", "-inf"),
        ("a\x00b", "args[0]", "NUL"),
        (b"bytes", "args[0]", "builtins.bytes"),
        (datetime.date(2024, 1, 1), "args[0]", "datetime.date"),
        (decimal.Decimal("1.5"), "args[0]", "decimal.Decimal"),
        (uuid.UUID(int=1), "args[0]", "uuid.UUID"),
    ],
)
def test_non_json_values_are_named(value: object, path: str, words: str) -> None:
    with pytest.raises(NotJSONSerializable) as info:
        check_json([value], "args")
    assert info.value.path == path
    assert words in str(info.value)


def test_nested_paths_name_the_exact_spot() -> None:
    with pytest.raises(NotJSONSerializable) as info:
        check_json({"user": {"tags": ["ok", {1, 2}]}}, "kwargs")
    assert info.value.path == "kwargs['user']['tags'][1]"


@pytest.mark.parametrize("key", [1, 1.5, None, ("a", "b"), True])
def test_non_string_dict_keys_are_refused(key: object) -> None:
    with pytest.raises(NotJSONSerializable) as info:
        check_json({"outer": {key: 1}}, "kwargs")
    assert info.value.path == f"kwargs['outer'][{key!r}]"
    assert "keys must be strings" in str(info.value)


def test_nul_in_a_dict_key_is_refused() -> None:
    with pytest.raises(NotJSONSerializable) as info:
        check_json({"a\x00": 1}, "kwargs")
    assert "NUL" in str(info.value)


def test_json_values_round_trip_and_tuples_become_lists() -> None:
    value = {"a": (1, 2.5, "x", None, True), "b": [{"c": []}], "é": "ü"}
    checked = check_json(value, "kwargs")
    assert checked == {"a": [1, 2.5, "x", None, True], "b": [{"c": []}], "é": "ü"}
    assert dumps(checked) == '{"a":[1,2.5,"x",null,true],"b":[{"c":[]}],"é":"ü"}'


def test_big_ints_and_empty_containers_pass() -> None:
    assert check_json([2**70, -(2**70), {}, [], ""], "args") == [2**70, -(2**70), {}, [], ""]
