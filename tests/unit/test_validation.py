import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openft.domain.entities import FileFormat
from openft.domain.errors import InvalidFile
from openft.domain.validation import FileValidator
from openft.testing.data import chat_file, chat_line, preference_file


def validate(data: bytes, expected: FileFormat | None = None, min_examples: int = 1):  # type: ignore[no-untyped-def]
    validator = FileValidator("train.jsonl", expected)
    validator.feed(data)
    return validator.finish(min_examples)


def test_chat_and_preference_files_are_recognised() -> None:
    assert validate(chat_file(12)).format is FileFormat.CHAT
    assert validate(chat_file(12)).examples == 12
    report = validate(preference_file(5))
    assert (report.format, report.examples) == (FileFormat.PREFERENCE, 5)


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_chunk_boundaries_do_not_matter(cuts: list[int]) -> None:
    data = chat_file(12)
    points = sorted({min(c, len(data)) for c in cuts})
    validator = FileValidator("f.jsonl")
    start = 0
    for point in [*points, len(data)]:
        validator.feed(data[start:point])
        start = point
    assert validator.finish().examples == 12


def test_missing_final_newline_and_blank_lines_are_fine() -> None:
    data = (chat_line(1) + "\n\n" + chat_line(2)).encode()
    assert validate(data).examples == 2


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: each line must be a JSON object"),
        pytest.param(
            '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "line 2: JSON nested too deeply",
            id="nested-100000-deep",
        ),
        ('{"prompt": "x", "completion": "y"}', "line 2: expected a chat example"),
        ('{"messages": []}', "messages must be a non-empty list"),
        ('{"messages": [{"role": "wizard", "content": "hi"}]}', "unknown role: 'wizard'"),
        (
            '{"messages": [{"role": "user", "content": "a", "weight": 1},'
            ' {"role": "assistant", "content": "b"}]}',
            "only assistant messages may",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"},'
            ' {"role": "assistant", "content": "b", "weight": 2}]}',
            "weight must be 0 or 1",
        ),
        (
            '{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}',
            "has no content",
        ),
    ],
)
def test_bad_lines_are_reported_with_their_line_number(line: str, needle: str) -> None:
    data = (chat_line(0) + "\n" + line + "\n").encode()
    with pytest.raises(InvalidFile) as raised:
        validate(data)
    assert needle in raised.value.message
    assert raised.value.param == "file"


def test_preference_lines_need_both_outputs() -> None:
    data = preference_file(1) + b'{"input": {"messages": [{"role": "user", "content": "q"}]}}\n'
    with pytest.raises(InvalidFile, match="line 2: missing required key 'preferred_output'"):
        validate(data)


def test_invalid_utf8_is_reported() -> None:
    with pytest.raises(InvalidFile, match="line 1: not valid UTF-8"):
        validate(b'{"messages": "\xff"}\n')


def test_formats_cannot_be_mixed_and_must_match_the_method() -> None:
    mixed = chat_file(1) + preference_file(1)
    with pytest.raises(InvalidFile, match="line 2: expected the chat format"):
        validate(mixed)
    with pytest.raises(InvalidFile, match="line 1: expected the preference format"):
        validate(chat_file(3), FileFormat.PREFERENCE)


def test_minimum_number_of_examples() -> None:
    with pytest.raises(InvalidFile, match="it has 3 examples, at least 10"):
        validate(chat_file(3), min_examples=10)
    with pytest.raises(InvalidFile, match="contains no examples"):
        validate(b"\n\n")


def test_weight_zero_assistant_tool_calls_and_content_parts_are_accepted() -> None:
    line = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}], "weight": 0},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
            {"role": "assistant", "content": "It is 42.", "weight": 1},
        ]
    }
    assert validate(json.dumps(line).encode()).examples == 1
