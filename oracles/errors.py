"""The one error type the oracles raise for invalid input."""

from __future__ import annotations


class OracleInputError(ValueError):
    """An input the oracle rejects: names the parameter, what was given and what was expected.

    The fuzzer treats an input the oracle rejects as invalid: a framework that accepts it silently is
    reported as "accepted invalid input", one that raises agrees with the oracle.
    """

    def __init__(self, parameter: str, given: object, expected: str):
        self.parameter = parameter
        self.given = given
        self.expected = expected
        super().__init__(f"{parameter}={given!s} is invalid: expected {expected}")


def require(condition: bool, parameter: str, given: object, expected: str) -> None:
    """Raise `OracleInputError(parameter, given, expected)` unless `condition` holds."""
    if not condition:
        raise OracleInputError(parameter, given, expected)
