"""Per-character feature signals of a text, to correlate with recurrent cells (LSTMVis style).

Convention: every feature is a float64 array of len(text) whose value at index t describes the
state *after reading character t* — the same moment at which Model.record reports the activations
for character t. So an opening quote is already "inside", a closing quote is already "outside",
an opening bracket already has the deeper depth and a newline has line position 0.

The extractors are ground truth for correlation, not parsers: they are short heuristics that look at
the whole text, documented where they guess.
"""

import re

import numpy as np

from charrnn.errors import CharrnnError

BRACKET_PAIRS = {"paren": "()", "square": "[]", "brace": "{}"}


def _is_word_char(ch):
    return ch.isalnum() or ch == "_"


def quote_feature(text, quote='"', reset_at_newline=False):
    """1.0 inside a quotation delimited by `quote`, 0.0 outside.

    A backslash inside a quotation escapes the next character (source-code strings). For the single
    quote, an apostrophe between two word characters ("don't") does not open or close anything.
    reset_at_newline ends an unterminated quotation at the end of its line.
    """
    values = np.zeros(len(text))
    inside = False
    escaped = False
    for t, ch in enumerate(text):
        if ch == "\n" and reset_at_newline:
            inside = escaped = False
        elif inside and escaped:
            escaped = False
        elif inside and ch == "\\":
            escaped = True
        elif ch == quote and not _is_apostrophe(text, t, quote):
            inside = not inside
        values[t] = inside
    return values


def _is_apostrophe(text, t, quote):
    if quote != "'" or t == 0 or t + 1 >= len(text):
        return False
    return _is_word_char(text[t - 1]) and _is_word_char(text[t + 1])


def bracket_depth(text, pairs="()[]{}"):
    """Nesting depth of the brackets in `pairs` (opening, closing, opening, closing, ...).

    All kinds share one counter; a closing bracket without an opening one leaves the depth at 0.
    """
    openers = set(pairs[0::2])
    closers = set(pairs[1::2])
    values = np.zeros(len(text))
    depth = 0
    for t, ch in enumerate(text):
        if ch in openers:
            depth += 1
        elif ch in closers and depth > 0:
            depth -= 1
        values[t] = depth
    return values


def line_position(text):
    """Characters read since the last newline (a newline itself is 0, the next character 1)."""
    values = np.zeros(len(text))
    position = 0
    for t, ch in enumerate(text):
        position = 0 if ch == "\n" else position + 1
        values[t] = position
    return values


def word_start(text):
    """1.0 at the first character of each word (letters, digits, underscore), else 0.0."""
    values = np.zeros(len(text))
    previous_in_word = False
    for t, ch in enumerate(text):
        in_word = _is_word_char(ch)
        values[t] = in_word and not previous_in_word
        previous_in_word = in_word
    return values


def comment_feature(text, hash_comments=True, c_comments=True):
    """1.0 inside a source-code comment: `#` and/or `//` to end of line, `/* ... */`.

    Both characters of an opening `//` or `/*` are inside; of a closing `*/` the `*` is inside and the
    `/` (after which the comment is over) outside; a line comment ends at its newline. Delimiters
    inside "..." or '...' strings do not count; strings end at a newline, so a stray apostrophe in
    prose cannot hide more than the rest of its line.
    """
    values = np.zeros(len(text))
    state = "code"  # code | string | line | block
    string_quote = None
    t = 0
    n = len(text)
    while t < n:
        ch = text[t]
        following = text[t + 1] if t + 1 < n else ""
        if state == "code":
            if hash_comments and ch == "#":
                state = "line"
            elif c_comments and ch == "/" and following in ("/", "*"):
                state = "line" if following == "/" else "block"
                values[t] = values[t + 1] = 1.0
                t += 2
                continue
            elif ch in "\"'" and not _is_apostrophe(text, t, ch):
                state, string_quote = "string", ch
        elif state == "string":
            if ch == "\n" or ch == string_quote:
                state = "code"
            elif ch == "\\" and following not in ("", "\n"):
                t += 2
                continue
        elif state == "line":
            if ch == "\n":
                state = "code"
        elif state == "block" and ch == "*" and following == "/":
            values[t] = 1.0
            state = "code"
            t += 2
            continue
        values[t] = state in ("line", "block")
        t += 1
    return values


def regex_feature(text, pattern, flags=0):
    """1.0 on every character of every (non-overlapping) match of `pattern`, else 0.0."""
    try:
        compiled = re.compile(pattern, flags)
    except re.error as error:
        raise CharrnnError(f"invalid regular expression {pattern!r}: {error}; fix the pattern") from None
    values = np.zeros(len(text))
    for match in compiled.finditer(text):
        values[match.start() : match.end()] = 1.0
    return values


def builtin_features(text):
    """All built-in features by name, in a fixed order."""
    features = {
        "in_double_quote": quote_feature(text, '"'),
        "in_single_quote": quote_feature(text, "'", reset_at_newline=True),
        "bracket_depth": bracket_depth(text),
    }
    for name, pair in BRACKET_PAIRS.items():
        features[f"{name}_depth"] = bracket_depth(text, pair)
    features["line_position"] = line_position(text)
    features["word_start"] = word_start(text)
    features["in_hash_comment"] = comment_feature(text, hash_comments=True, c_comments=False)
    features["in_c_comment"] = comment_feature(text, hash_comments=False, c_comments=True)
    return features
