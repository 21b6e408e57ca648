"""common/jsontext.py: the JSON text of results, events, output lines and JSON columns."""

import json
import math
import random

import pytest

from common import jsontext


def test_floats_come_back_exactly_and_read_as_the_json_module_reads_them():
    rng = random.Random(7)
    vector = [rng.uniform(-1, 1) for _ in range(384)] + [0.1, 1e-300, -0.0, 1e22]
    text = jsontext.dumps({"embedding": vector})
    assert jsontext.loads(text)["embedding"] == vector
    assert json.loads(text)["embedding"] == vector


def test_compact_utf8_text_with_string_keys():
    assert jsontext.dumps({"a": [1, 2], 3: "é ☃"}) == '{"a":[1,2],"3":"é ☃"}'
    assert jsontext.dumps_bytes({"k": "é"}) == '{"k":"é"}'.encode()


def test_what_json_cannot_say_is_null_and_huge_integers_still_write():
    assert jsontext.loads(jsontext.dumps([math.nan, math.inf])) == [None, None]
    assert jsontext.loads(jsontext.dumps({"n": 2**70})) == {"n": 2**70}


def test_an_unwritable_value_is_a_type_error():
    with pytest.raises(TypeError):
        jsontext.dumps({"x": object()})
