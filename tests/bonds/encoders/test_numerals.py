"""Numbers spelled out before a transcript is embedded (bonds.encoders.numerals)."""

from __future__ import annotations

import pytest

from bonds.encoders.numerals import spell_numbers


@pytest.mark.parametrize(("heard", "embedded"), [
    ("7.", "seven."),
    ("Seven.", "Seven."),
    ("I have 3 dogs and 1,250 cats.", "I have three dogs and one thousand, two hundred and fifty cats."),
    ("the 21st of May", "the twenty-first of May"),
    ("3.14 and 0.1", "three point one four and zero point one"),
    ("in 1990", "in nineteen ninety"),
    ("1500 dollars", "fifteen hundred dollars"),
    ("call 0123456789012345", "call " + " ".join(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero", "one", "two",
         "three", "four", "five"])),
    ("mp3 and b2b stay", "mp3 and b2b stay"),
    ("7, 8 and 9", "seven, eight and nine"),
])
def test_numbers_become_words(heard, embedded):
    assert spell_numbers(heard) == embedded


def test_text_without_numbers_is_untouched():
    text = "A dog barks at the mailman; the mailman, calmly, walks on."
    assert spell_numbers(text) is not None and spell_numbers(text) == text
