"""How a text refers to action units: by FACS name ("lip corner puller", also in the plural),
and references that cannot be true of any face: codes that are no codes ("AU1_25", "AU0",
"AU1.5C") and a code whose parenthesis names another unit ("AU05 (upper lip raiser)")."""

from __future__ import annotations

import re
from functools import cache

from engine.aus import au_definitions

#: Code look-alikes: an underscore or a decimal point after "AU" and its digits, three digits
#: or more, or the number 0.
_MALFORMED_CODE = re.compile(r"\bAU(?:\d*_\w*|\d+\.\d\w*|\d{3,}\w*|0+\b)", re.IGNORECASE)
#: A code (an intensity letter may follow it) and the parenthesis right after it.
_CODE_PARENTHESIS = re.compile(r"\bAU\s?(\d{1,2})[A-E]?\s*\(([^)]*)\)", re.IGNORECASE)


@cache
def au_name_pattern() -> tuple[re.Pattern, dict[str, str]]:
    """A pattern of every known AU name (a plural "s" may follow) and name -> code."""
    names = {d.name.lower(): code for code, d in au_definitions().items()}
    alternation = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"\b({alternation})s?\b", re.IGNORECASE), names


def misnamed_aus(text: str) -> tuple[str, ...]:
    """The references to AUs in ``text`` that are wrong as written: malformed codes, and codes
    whose parenthesis names another unit and not the code's own (``"AU05 (upper lip
    raiser)"``); a parenthesis with another wording ("AU12 (smile)", "(B, 2.1/5)") is no
    claim of a name."""
    wrong = [match[0] for match in _MALFORMED_CODE.finditer(text)]
    pattern, names = au_name_pattern()
    for match in _CODE_PARENTHESIS.finditer(text):
        code = f"AU{int(match[1]):02d}"
        named = {names[name.lower()] for name in pattern.findall(match[2])}
        if named and code not in named:
            wrong.append(match[0])
    return tuple(wrong)
