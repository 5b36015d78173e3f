"""The scalar checks every configuration uses: one error type, one wording."""

import math

import numpy as np
import pytest

from advaudio.errors import ParameterError
from advaudio.validation import choice, finite_float, integer


def test_integer_returns_int_and_refuses_bools_floats_and_small_values():
    assert integer("hop_length", np.int64(512)) == 512 and type(integer("n", np.int32(3))) is int
    assert integer("seed", 0, minimum=0) == 0
    for value, minimum, words in [
        (0, 1, "hop_length must be a positive integer, got 0"),
        (True, 1, "hop_length must be a positive integer, got True"),
        (2.0, 1, "hop_length must be a positive integer, got 2.0"),
        (-1, 0, "hop_length must be a non-negative integer, got -1"),
        (999, 1000, "hop_length must be an integer >= 1000, got 999"),
    ]:
        with pytest.raises(ParameterError) as info:
            integer("hop_length", value, minimum=minimum)
        assert str(info.value) == words


def test_finite_float():
    assert finite_float("tuning", -0.25) == -0.25 and type(finite_float("x", np.float32(1))) is float
    assert finite_float("offset", 0, minimum=0) == 0.0
    for value, kw, words in [
        ("1", {}, "x must be a number, got '1'"),
        (False, {}, "x must be a number, got False"),
        (math.inf, {}, "x must be finite, got inf"),
        (0.0, {"positive": True}, "x must be positive, got 0.0"),
        (-0.5, {"minimum": 0}, "x must be >= 0, got -0.5"),
    ]:
        with pytest.raises(ParameterError) as info:
            finite_float("x", value, **kw)
        assert str(info.value) == words


def test_choice():
    assert choice("compression", None, (None, "lzf", "gzip")) is None
    with pytest.raises(ParameterError) as info:
        choice("fold_rule", "random", ("auto", "prefix"))
    assert str(info.value) == "fold_rule must be one of auto, prefix, got 'random'"
