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


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "ok \udc80"])
def test_lone_surrogates_are_refused_in_values_and_keys(text: str) -> None:
    with pytest.raises(NotJSONSerializable, match="lone surrogate"):
        check_json([text], "args")
    with pytest.raises(NotJSONSerializable, match="lone surrogate") as info:
        check_json({text: 1}, "kwargs")
    assert info.value.path.startswith("kwargs[")


def test_nesting_deeper_than_the_limit_is_refused_without_recursion_error() -> None:
    from django_ray.serialization import MAX_DEPTH

    ok: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    check_json(ok, "value")
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(NotJSONSerializable, match=f"deeper than {MAX_DEPTH}"):
        check_json(deep, "value")


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(NotJSONSerializable, match="contains itself"):
        check_json(loop, "return value")
