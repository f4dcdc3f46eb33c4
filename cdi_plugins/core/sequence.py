"""cohere-style sequence strings: ``"3*(20*ER+180*HIO)+20*ER"`` -> ``[(algorithm, iterations), ...]``."""

from __future__ import annotations

import re

from cdi_plugins.errors import CDIError

__all__ = ["parse_sequence"]


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\*)|(\+)|(\()|(\)))")


def parse_sequence(text: str) -> list[tuple[str, int | None]]:
    """Expand a cohere-style sequence into ``[(algorithm, iterations), ...]``.

    ``N*ALG`` is ALG for N iterations, ``N*( ... )`` repeats a group, ``+``
    chains.  A bare ``ALG`` keeps its default iteration count (None).

    Raises
    ------
    CDIError
        On a syntax error, with the character position.
    """
    tokens = []
    pos = 0
    text = str(text)
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise CDIError(f"sequence {text!r}: unexpected character {text[pos:].strip()[0]!r} at position {pos + 1}")
        kind = m.lastindex
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    i = 0

    def err(msg):
        where = tokens[i][2] + 1 if i < len(tokens) else len(text) + 1
        return CDIError(f"sequence {text!r}: {msg} at position {where}")

    def seq():
        nonlocal i
        out = term()
        while i < len(tokens) and tokens[i][0] == 4:
            i += 1
            out += term()
        return out

    def term():
        nonlocal i
        if i < len(tokens) and tokens[i][0] == 1:
            count = int(tokens[i][1])
            i += 1
            if i >= len(tokens) or tokens[i][0] != 3:
                raise err("expected '*' after a count")
            i += 1
            if count < 1:
                raise err("a count must be at least 1")
            if i < len(tokens) and tokens[i][0] == 5:
                return atom() * count
            if i < len(tokens) and tokens[i][0] == 2:
                name = tokens[i][1]
                i += 1
                return [(name, count)]
            raise err("expected an algorithm name or '(' after '*'")
        return atom()

    def atom():
        nonlocal i
        if i >= len(tokens):
            raise err("unexpected end")
        kind, val, _ = tokens[i]
        if kind == 2:
            i += 1
            return [(val, None)]
        if kind == 5:
            i += 1
            out = seq()
            if i >= len(tokens) or tokens[i][0] != 6:
                raise err("missing ')'")
            i += 1
            return out
        raise err(f"unexpected {val!r}")

    if not tokens:
        raise CDIError("sequence is empty")
    out = seq()
    if i != len(tokens):
        raise err(f"unexpected {tokens[i][1]!r}")
    return out
