"""``matches`` speaks Go's RE2 syntax: what it accepts, what it means, and what it refuses.

Cases are RE2's documented syntax (``\\Q..\\E``, ``[[:alpha:]]``, ``\\pL``, flags groups, ``\\z``,
``$`` only at the very end without ``m``), where Python's ``re`` differs or lacks it, and the
constructs Go refuses (backreferences, lookaround, doubled repetition) with Go's wording.
"""

from __future__ import annotations

import pytest

from loom.bexpr import FilterError
from loom.bexpr.regex import compile_regex


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("web", "my-web-1", True),  # unanchored, as Go's MatchString
        ("^web$", "web\n", False),  # $ is the end of text (Python's $ also matches before \n)
        ("(?m)^b$", "a\nb\nc", True),
        ("a.c", "a\nc", False),
        ("(?s)a.c", "a\nc", True),
        ("(?i)WEB", "web", True),
        ("(?i:w)EB", "wEB", True),
        ("(?i:w)EB", "web", False),  # the flag ends with its group
        ("\\Qa.b*\\E", "a.b*", True),
        ("\\Qa.b*\\E", "axbb", False),
        ("[[:alpha:]]+[[:digit:]]", "web1", True),
        ("[[:^alpha:]]", "web", False),
        ("\\pL\\p{Nd}", "é1", True),
        ("\\PL", "é", False),
        ("\\x{263a}", "☺", True),
        ("\\Aweb\\z", "web", True),
        ("\\bweb\\b", "a web b", True),
        ("\\bweb\\b", "aweb", False),
        ("\\Bweb", "aweb", True),
        ("v[0-9]{2,3}", "v12", True),
        ("v[0-9]{2,3}$", "v1", False),
        ("a{,2}", "a{,2}", True),  # not a repeat: literal braces, as in Go
        ("[^,]+,", "x,", True),
        ("[]a]", "]", True),
        ("[a-]", "-", True),
        ("a+?b", "aab", True),  # lazy: the same language
        ("(?P<v>\\d+)\\.(?:\\d+)", "1.2", True),
        ("", "anything", True),
    ],
)
def test_patterns_mean_what_they_mean_in_go(pattern: str, text: str, expected: bool) -> None:
    assert compile_regex(pattern).search(text) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(web", "missing closing )"),
        ("web)", "unexpected )"),
        ("[web", "missing closing ]"),
        ("\\1", "invalid escape sequence: \\1"),  # no backreferences in RE2
        ("(?=web)", "invalid or unsupported Perl syntax"),
        ("(?!web)", "invalid or unsupported Perl syntax"),
        ("a**", "invalid nested repetition operator: **"),
        ("a{2}{3}", "invalid nested repetition operator"),
        ("*a", "missing argument to repetition operator: *"),
        ("a{1001}", "invalid repeat count"),
        ("[z-a]", "invalid character class range: z-a"),
        ("[[:nope:]]", "invalid character class range"),
        ("\\p{Greek}", "invalid character class range"),
        ("web\\", "trailing backslash"),
        ("\\q", "invalid escape sequence: \\q"),
        ("((((a{1,1000}){1,1000}))){1,1000}", "expression too large"),
    ],
)
def test_what_go_refuses_is_refused_with_gos_words(pattern: str, problem: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_regex(pattern)
    assert f"Failed to compile regular expression {pattern!r}: " in str(caught.value)
    assert problem in str(caught.value)


def test_a_compiled_pattern_remembers_its_steps_across_documents() -> None:
    regex = compile_regex("^web-[0-9]+$")
    for i in range(200):
        assert regex.search(f"web-{i}")
    assert not regex.search("web-x")
    assert 0 < len(regex._memo) < 200  # steps are shared across the documents
