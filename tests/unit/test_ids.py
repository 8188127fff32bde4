from hypothesis import given
from hypothesis import strategies as st

from openft.domain import ids


@given(seq=st.integers(min_value=1, max_value=ids.MAX_EVENT_SEQ))
def test_event_id_round_trips_and_has_openai_shape(seq: int) -> None:
    key = ids.new_event_key()
    value = ids.event_id(key, seq)
    assert value.startswith("ftevent-") and len(value) == len("ftevent-") + 24
    assert value[len("ftevent-") :].isalnum()
    assert ids.parse_event_id(value) == (key, seq)


def test_parse_event_id_rejects_what_is_not_an_event_id() -> None:
    key = ids.new_event_key()
    for value in [
        "",
        "ftevent-",
        "ftjob-" + "a" * 24,
        "ftevent-" + "a" * 23,
        "ftevent-" + "!" * 24,
        "ftevent-" + key + "00000000",
    ]:
        assert ids.parse_event_id(value) is None


def test_public_ids_have_prefixes_and_24_characters() -> None:
    for value, prefix in [
        (ids.new_file_id(), "file-"),
        (ids.new_job_id(), "ftjob-"),
        (ids.new_checkpoint_id(), "ftckpt_"),
    ]:
        assert value.startswith(prefix)
        assert len(value) == len(prefix) + 24
