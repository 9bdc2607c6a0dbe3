"""Numbers written as words, so that what Whisper hears lands where the same words typed would.

Whisper writes a spoken "seven" as "seven." on one machine and "7." on another: its int8 matrix products
take a different path on Intel (MKL) than on AMD (oneDNN), and greedy decoding tips either way. A text
encoder places "7." in another spot than "seven." (MiniLM: cosine 0.87 against 0.91 to "seven"), and
German or French labels reach the word, not the digit. Spelling numbers out before embedding makes the
speech vector the same whichever form was written; the raw transcript stays in the item's note.

num2words (a well-kept library of number spelling in 50+ languages) does the spelling; this module only
finds the numbers.
"""

from __future__ import annotations

import re
from decimal import Decimal

from num2words import num2words

# 1,234 or 1234 or 3.5 or 21st; not part of a word ("mp3", "b2b") or of a longer digit run
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?(?P<ord>st|nd|rd|th)?(?![\w])",
    re.IGNORECASE,
)
# longer digit runs are identifiers (a phone number, a code), read digit by digit as people say them
_LONGEST_NUMBER = 12


def spell_numbers(text: str, lang: str = "en") -> str:
    """`text` with each number written in words: "7." -> "seven.", "21st" -> "twenty-first",
    "3.5" -> "three point five", "1,000" -> "one thousand", "1990" -> "nineteen ninety"; other text
    unchanged."""
    return _NUMBER.sub(lambda match: _words(match, lang), text)


def _words(match: re.Match[str], lang: str) -> str:
    digits = match["int"].replace(",", "")
    if len(digits) > _LONGEST_NUMBER:
        spelled = " ".join(num2words(int(d), lang=lang) for d in digits)
        return spelled + (" point " + " ".join(num2words(int(d), lang=lang) for d in match["frac"])
                          if match["frac"] else "")
    if match["ord"] and not match["frac"]:
        return num2words(int(digits), lang=lang, to="ordinal")
    if len(match["int"]) == 4 and 1100 <= int(digits) <= 2099 and not match["frac"]:
        return num2words(int(digits), lang=lang, to="year")  # "1990": how it is said, "nineteen ninety"
    if match["frac"]:
        words = num2words(Decimal(f"{digits}.{match['frac']}"), lang=lang)  # a float would print 0.1 as 0.1000000001
    else:
        words = num2words(int(digits), lang=lang)
    return words + (match["ord"] or "")
