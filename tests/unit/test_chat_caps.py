"""What one chat completion may ask for: OpenAI's ranges, then this server's caps."""

from __future__ import annotations

import pytest

from openft.domain.chat import Caps, sampling
from openft.domain.errors import InvalidRequest


def test_caps_bound_n_and_max_tokens_naming_the_parameter() -> None:
    caps = Caps(max_n=2, max_tokens=10)
    for asked, param in (
        ({"n": 3}, "n"),
        ({"max_tokens": 11}, "max_tokens"),
        ({"max_completion_tokens": 11, "max_tokens": 5}, "max_completion_tokens"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            sampling(caps=caps, **asked)  # type: ignore[arg-type]
        assert caught.value.param == param and caught.value.status_code == 400
    fits = sampling(caps=caps, n=2, max_tokens=10)
    assert (fits.n, fits.token_limit) == (2, 10)


def test_a_request_without_max_tokens_ends_at_the_cap() -> None:
    unsaid = sampling(caps=Caps(max_tokens=10))
    assert unsaid.max_tokens is None and unsaid.token_limit == 10
    assert sampling().token_limit == Caps().max_tokens


def test_a_seed_must_fit_64_bits() -> None:
    for seed in (2**63, -(2**63) - 1):
        with pytest.raises(InvalidRequest, match="64-bit") as caught:
            sampling(seed=seed)
        assert caught.value.param == "seed"
    assert sampling(seed=2**63 - 1).seed == 2**63 - 1
