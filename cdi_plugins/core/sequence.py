"""cohere-style sequence strings: ``"3*(20*ER+180*HIO)+20*ER"`` -> ``[(algorithm, iterations), ...]``."""

from __future__ import annotations

import re

from cdi_plugins.core.limits import MAX_ITERATIONS, MAX_STEPS
from cdi_plugins.errors import CDIError

__all__ = ["parse_sequence"]


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\*)|(\+)|(\()|(\)))")


def parse_sequence(text: str, *, max_steps: int = MAX_STEPS,
                   max_iterations: int = MAX_ITERATIONS) -> list[tuple[str, int | None]]:
    """Expand a cohere-style sequence into ``[(algorithm, iterations), ...]``.

    ``N*ALG`` is ALG for N iterations, ``N*( ... )`` repeats a group, ``+``
    chains.  A bare ``ALG`` keeps its default iteration count (None).

    Raises
    ------
    CDIError
        On a syntax error, with the character position, and when the expansion would exceed
        *max_steps* steps or *max_iterations* iterations (checked before anything is expanded).
    """
    return _Parser(str(text), max_steps, max_iterations).parse()


class _Parser:
    """Recursive descent over the tokens; groups are sized before they are repeated."""

    def __init__(self, text: str, max_steps: int, max_iterations: int):
        self.text, self.max_steps, self.max_iterations = text, max_steps, max_iterations
        self.tokens = self._tokenize(text)
        self.i = 0

    @staticmethod
    def _tokenize(text: str) -> list:
        tokens, pos = [], 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise CDIError(f"sequence {text!r}: unexpected character {text[pos:].strip()[0]!r} "
                               f"at position {pos + 1}")
            kind = m.lastindex
            tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        return tokens

    def parse(self) -> list:
        if not self.tokens:
            raise CDIError("sequence is empty")
        out = self.seq()
        if self.i != len(self.tokens):
            raise self.err(f"unexpected {self.tokens[self.i][1]!r}")
        return out

    def err(self, msg) -> CDIError:
        where = self.tokens[self.i][2] + 1 if self.i < len(self.tokens) else len(self.text) + 1
        return CDIError(f"sequence {self.text!r}: {msg} at position {where}")

    def peek(self, kind) -> bool:
        return self.i < len(self.tokens) and self.tokens[self.i][0] == kind

    def seq(self) -> list:
        out = self.term()
        while self.peek(4):
            self.i += 1
            out = self.bounded(out + self.term(), 1)
        return out

    def term(self) -> list:
        if not self.peek(1):
            return self.atom()
        count = int(self.tokens[self.i][1])
        self.i += 1
        if not self.peek(3):
            raise self.err("expected '*' after a count")
        self.i += 1
        if count < 1:
            raise self.err("a count must be at least 1")
        if self.peek(5):
            return self.bounded(self.atom(), count)
        if self.peek(2):
            name = self.tokens[self.i][1]
            self.i += 1
            return self.bounded([(name, count)], 1)
        raise self.err("expected an algorithm name or '(' after '*'")

    def atom(self) -> list:
        if self.i >= len(self.tokens):
            raise self.err("unexpected end")
        kind, val, _ = self.tokens[self.i]
        if kind == 2:
            self.i += 1
            return [(val, None)]
        if kind == 5:
            self.i += 1
            out = self.seq()
            if not self.peek(6):
                raise self.err("missing ')'")
            self.i += 1
            return out
        raise self.err(f"unexpected {val!r}")

    def bounded(self, group: list, times: int) -> list:
        """*group* repeated *times*, refused before it is built when it would exceed the limits."""
        steps = len(group) * times
        iterations = sum(n or 0 for _, n in group) * times
        if steps > self.max_steps:
            raise CDIError(f"sequence {self.text!r} expands to {steps:,} steps, more than the limit of "
                           f"{self.max_steps:,}")
        if iterations > self.max_iterations:
            raise CDIError(f"sequence {self.text!r} asks for {iterations:,} iterations, more than the limit of "
                           f"{self.max_iterations:,} per run")
        return group * times
