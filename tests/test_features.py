import numpy as np
import pytest

from charrnn.errors import CharrnnError
from charrnn.features import (
    bracket_depth,
    builtin_features,
    comment_feature,
    line_position,
    quote_feature,
    regex_feature,
    word_start,
)


def check(values, expected):
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float64))


def test_double_quote_is_inside_after_the_opening_quote_and_outside_after_the_closing_one():
    check(quote_feature('a "bc" d'), [0, 0, 1, 1, 1, 0, 0, 0])


def test_double_quote_spans_lines_and_backslash_escapes_a_quote():
    check(quote_feature('"a\n"b'), [1, 1, 1, 0, 0])
    check(quote_feature('"a\\"b" c'), [1, 1, 1, 1, 1, 0, 0, 0])


def test_single_quote_skips_apostrophes_and_can_end_at_newline():
    check(quote_feature("don't 'x' y", "'"), [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0])
    check(quote_feature("'ab\ncd", "'", reset_at_newline=True), [1, 1, 1, 0, 0, 0])
    check(quote_feature("'ab\ncd", "'"), [1, 1, 1, 1, 1, 1])


def test_bracket_depth_counts_nesting_and_ignores_unmatched_closers():
    text = "f(a[b]{c}))x"
    check(bracket_depth(text), [0, 1, 1, 2, 2, 1, 2, 2, 1, 0, 0, 0])
    check(bracket_depth(text, "()"), [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    check(bracket_depth(text, "{}"), [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0])


def test_line_position_counts_characters_since_the_newline():
    check(line_position("ab\ncde\n\nf"), [1, 2, 0, 1, 2, 3, 0, 0, 1])


def test_word_start_marks_first_character_of_each_word():
    check(word_start("hi, my_var2 x"), [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])


def test_hash_comment_runs_to_end_of_line_but_not_inside_strings():
    text = 'x = 1  # no "q"\ny = "#"'
    expected = [0] * 7 + [1] * 8 + [0] + [0] * 7
    check(comment_feature(text, hash_comments=True, c_comments=False), expected)


def test_c_comments_block_and_line():
    check(comment_feature("a/*b*/c//d\ne", hash_comments=False), [0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0])
    check(comment_feature("#x", hash_comments=False), [0, 0])
    check(comment_feature('"//" x', hash_comments=False), [0, 0, 0, 0, 0, 0])


def test_regex_marks_every_character_of_each_match():
    check(regex_feature("cat concat", "cat"), [1, 1, 1, 0, 0, 0, 0, 1, 1, 1])
    check(regex_feature("a b", r"\b"), [0, 0, 0])  # empty matches mark nothing


def test_invalid_regex_is_a_user_error():
    with pytest.raises(CharrnnError, match="invalid regular expression"):
        regex_feature("abc", "(")


def test_builtin_features_cover_the_text():
    text = 'def f(x):  # "doc"\n    return {"a": [x]}\n'
    features = builtin_features(text)
    assert {
        "in_double_quote",
        "in_single_quote",
        "bracket_depth",
        "paren_depth",
        "square_depth",
        "brace_depth",
        "line_position",
        "word_start",
        "in_hash_comment",
        "in_c_comment",
    } <= set(features)
    for values in features.values():
        assert values.shape == (len(text),)
    assert features["square_depth"].max() == 1 and features["brace_depth"].max() == 1
    assert features["bracket_depth"].max() == 2
    assert features["in_hash_comment"][text.index("#")] == 1
    assert all(len(values) == 0 for values in builtin_features("").values())
