"""cdi_plugins.core.sequence: cohere-style sequence strings and their bounds."""

import pytest

from cdi_plugins.core.limits import MAX_ITERATIONS, MAX_STEPS
from cdi_plugins.core.sequence import parse_sequence
from cdi_plugins.errors import CDIError


def test_the_classic_recipe_expands_to_seven_steps():
    seq = parse_sequence("3*(20*ER+180*HIO)+20*ER")
    assert seq == [("ER", 20), ("HIO", 180)] * 3 + [("ER", 20)]
    assert parse_sequence(" HIO + 2*( ER ) ") == [("HIO", None), ("ER", None), ("ER", None)]


@pytest.mark.parametrize("text, message", [
    ("1000000000*(1*ER)", "expands to 1,000,000,000 steps, more than the limit of 10,000"),
    ("100*(100*(100*(ER)))", "expands to 1,000,000 steps"),
    ("20000000*ER", "asks for 20,000,000 iterations, more than the limit of 10,000,000 per run"),
    ("5000*(3000*ER)", "asks for 15,000,000 iterations"),
    ("9999*ER+10000*(1*ER)", "expands to 10,001 steps"),
])
def test_expansions_beyond_the_limits_are_refused_before_building(text, message):
    with pytest.raises(CDIError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_sequence(text)


def test_the_limits_are_the_documented_ones():
    assert len(parse_sequence(f"{MAX_STEPS}*(ER)")) == MAX_STEPS
    assert parse_sequence(f"{MAX_ITERATIONS}*ER") == [("ER", MAX_ITERATIONS)]


@pytest.mark.parametrize("text, message", [
    ("3*(ER", "missing ')' at position 6"), ("3 ER", "expected '*' after a count at position 3"),
    ("0*ER", "a count must be at least 1"), ("ER+", "unexpected end"), ("", "sequence is empty"),
    ("ER-HIO", "unexpected character '-'"),
])
def test_syntax_errors_name_the_position(text, message):
    with pytest.raises(CDIError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse_sequence(text)
