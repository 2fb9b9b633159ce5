"""Bounds such as `flops<=2e9` or `params<=10e6`, parsed (never evaluated) for constraints and filters."""

import math
import operator
import re
from dataclasses import dataclass

from autodistil_evo.errors import UserError

OPERATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
PATTERN = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*$", re.I)


@dataclass(frozen=True)
class Bound:
    name: str
    op: str
    value: float

    def holds(self, x: float) -> bool:
        return OPERATORS[self.op](x, self.value)

    def violation(self, x: float) -> float:
        """pymoo's G convention: <= 0 exactly when the bound holds, relative to the bound's size.

        A strict bound met with equality is broken, so its violation is the smallest positive float
        above zero rather than 0: pymoo then agrees with `holds` (and with `select --where`).
        """
        scale = abs(self.value) or 1.0
        violation = (x - self.value) / scale if self.op in ("<=", "<") else (self.value - x) / scale
        return math.ulp(0.0) if violation <= 0 and not self.holds(x) else violation

    def __str__(self):
        return f"{self.name}{self.op}{self.value:g}"


def parse_bound(text: str, allowed: tuple, what="constraint") -> Bound:
    match = PATTERN.match(text)
    if not match:
        raise UserError(f"{what} {text!r}: expected NAME<=NUMBER (or <, >=, >), e.g. 'flops<=2e9'")
    name, op, number = match.groups()
    name = name.lower()
    if name not in allowed:
        raise UserError(f"{what} {text!r}: unknown name '{name}' (known: {', '.join(allowed)})")
    try:
        value = float(number)
    except ValueError:
        raise UserError(f"{what} {text!r}: {number!r} is not a number") from None
    return Bound(name, op, value)
