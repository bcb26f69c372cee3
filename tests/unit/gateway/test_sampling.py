"""The gateway validates sampling parameters with exactly the inference service's rules."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamagate.v1 import types_pb2
from services.common.errors import InvalidRequest
from services.gateway.sampling import SamplingParams

inference_sampling = pytest.importorskip("services.common.sampling")


def rejected(validate) -> bool:
    try:
        validate()
    except InvalidRequest:
        return True
    return False


@given(
    temperature=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    top_p=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    max_gen_len=st.none() | st.integers(-3, 3),
    stop=st.lists(st.text(max_size=3) | st.just("x" * 257), max_size=10),
)
def test_same_verdicts_as_the_inference_service(temperature, top_p, max_gen_len, stop):
    ours = SamplingParams(temperature=temperature, top_p=top_p, max_gen_len=max_gen_len, stop=tuple(stop))
    defaults = inference_sampling.SamplingParams()
    theirs = inference_sampling.SamplingParams(
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=defaults.top_p if top_p is None else top_p,
        max_gen_len=max_gen_len,
        stop=tuple(stop),
    )
    assert rejected(ours.validate) == rejected(theirs.validate)


def test_turn_overrides_only_what_it_sets():
    base = SamplingParams.from_pb(types_pb2.SamplingParams(temperature=0.0, max_gen_len=5, stop=["a"]))
    turn = SamplingParams.from_pb(types_pb2.SamplingParams(max_gen_len=9))
    merged = base.overridden_by(turn)
    assert (merged.temperature, merged.max_gen_len, merged.stop) == (0.0, 9, ("a",))
    assert merged.to_pb() == types_pb2.SamplingParams(temperature=0.0, max_gen_len=9, stop=["a"])


def test_turn_merges_field_by_field_including_the_flags():
    base = SamplingParams.from_pb(types_pb2.SamplingParams(logprobs=True, stop=["END"], ignore_eos=True))
    only_temperature = base.overridden_by(SamplingParams.from_pb(types_pb2.SamplingParams(temperature=1.0)))
    assert (only_temperature.logprobs, only_temperature.stop, only_temperature.ignore_eos) == (
        True,
        ("END",),
        True,
    )
    assert only_temperature.temperature == 1.0
    # A flag the turn sets, false included, wins; a stop list it sends replaces the start's.
    off = base.overridden_by(
        SamplingParams.from_pb(types_pb2.SamplingParams(logprobs=False, ignore_eos=False, stop=["X"]))
    )
    assert (off.logprobs, off.stop, off.ignore_eos) == (False, ("X",), False)
    assert off.to_pb().HasField("logprobs") and not off.to_pb().logprobs


def test_messages_name_the_field():
    with pytest.raises(InvalidRequest, match=r"turn.sampling.top_p .*\(0, 1\]") as info:
        SamplingParams(top_p=2.0).validate("turn.sampling")
    assert info.value.violations[0].field == "turn.sampling.top_p"
