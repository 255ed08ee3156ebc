"""RFC 8941 structured fields: just what RFC 9421's two signature headers need.

Theory of operation. RFC 9421 §4.1 and §4.2 define ``Signature-Input`` and ``Signature``
as RFC 8941 Dictionaries: ``label=(inner list);params`` and ``label=:bytes:``. This
module parses exactly that subset (§4.2: dictionary, inner list of strings without
parameters, bare items string / token / integer / byte sequence / boolean, parameters)
and serializes the ``@signature-params`` inner list (§4.1.1). Anything else is a
ValueError naming what was unexpected; the caller turns it into its own typed error.
Pure functions over text, no I/O.
"""

from __future__ import annotations

import base64
import re

__all__ = ["Item", "Token", "parse_signature_dictionaries", "serialize_inner_list"]


class Token(str):
    """An sf-token (serialized bare), as opposed to an sf-string (quoted)."""


Item = str | int | bool | bytes
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*")
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INT = re.compile(r"-?[0-9]{1,15}")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def _match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise ValueError(f"unexpected {self.text[self.pos : self.pos + 20]!r}")
        self.pos = m.end()
        return m

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _skip(self, chars: str) -> None:
        while self._peek() and self._peek() in chars:
            self.pos += 1

    def bare_item(self) -> Item:
        c = self._peek()
        if c == '"':
            out: list[str] = []
            self.pos += 1
            while True:
                ch = self._peek()
                self.pos += 1
                if ch == "\\":
                    ch = self._peek()
                    if ch not in ('"', "\\"):
                        raise ValueError("bad escape in string")
                    self.pos += 1
                elif ch == '"':
                    return "".join(out)
                elif not ch or not " " <= ch <= "~":
                    raise ValueError("unterminated or non-ASCII string")
                out.append(ch)
        if c == ":":
            return base64.b64decode(self._match(_BYTES).group(1), validate=True)
        if c == "?":
            return self._match(re.compile(r"\?([01])")).group(1) == "1"
        if c == "-" or c.isdigit():
            return int(self._match(_INT).group(0))
        return Token(self._match(_TOKEN).group(0))

    def params(self) -> dict[str, Item]:
        out: dict[str, Item] = {}
        while self._peek() == ";":
            self.pos += 1
            self._skip(" ")
            key = self._match(_KEY).group(0)
            value: Item = True
            if self._peek() == "=":
                self.pos += 1
                value = self.bare_item()
            if key in out:
                raise ValueError(f"parameter {key!r} given twice")
            out[key] = value
        return out

    def dictionary(self) -> dict[str, tuple[Item | list[str], dict[str, Item]]]:
        out: dict[str, tuple[Item | list[str], dict[str, Item]]] = {}
        self._skip(" ")
        while self.pos < len(self.text):
            key = self._match(_KEY).group(0)
            if key in out:
                raise ValueError(f"label {key!r} given twice")
            if self._peek() != "=":
                raise ValueError(f"member {key!r} has no value")
            self.pos += 1
            value: Item | list[str]
            if self._peek() == "(":
                self.pos += 1
                value = []
                while True:
                    self._skip(" ")
                    if self._peek() == ")":
                        self.pos += 1
                        break
                    item = self.bare_item()
                    if not isinstance(item, str) or isinstance(item, Token):
                        raise ValueError("a covered component must be a string")
                    if self._peek() == ";":
                        raise ValueError(f"component parameters on {item!r} are not supported")
                    value.append(item)
                    if self._peek() not in (" ", ")"):
                        raise ValueError("inner list items must be separated by spaces")
            else:
                value = self.bare_item()
            out[key] = (value, self.params())
            self._skip(" \t")
            if self.pos < len(self.text):
                if self._peek() != ",":
                    raise ValueError(f"expected ',' at {self.text[self.pos : self.pos + 20]!r}")
                self.pos += 1
                self._skip(" \t")
                if self.pos == len(self.text):
                    raise ValueError("trailing comma")
        return out


def parse_signature_dictionaries(
    signature_input: str, signature: str
) -> tuple[dict[str, tuple[list[str], dict[str, Item]]], dict[str, bytes]]:
    """Parse RFC 9421 ``Signature-Input`` and ``Signature``; ValueError when malformed."""
    inputs: dict[str, tuple[list[str], dict[str, Item]]] = {}
    for label, (value, params) in _Parser(signature_input.strip()).dictionary().items():
        if not isinstance(value, list):
            raise ValueError(f"Signature-Input member {label!r} is not an inner list")
        inputs[label] = (value, params)
    signatures: dict[str, bytes] = {}
    for label, (item, _) in _Parser(signature.strip()).dictionary().items():
        if not isinstance(item, bytes):
            raise ValueError(f"Signature member {label!r} is not a byte sequence")
        signatures[label] = item
    return inputs, signatures


def _serialize(item: Item) -> str:
    if isinstance(item, bool):
        return "?1" if item else "?0"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, bytes):
        return ":" + base64.b64encode(item).decode("ascii") + ":"
    if isinstance(item, Token):
        return str(item)
    return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_inner_list(components: list[str], params: list[tuple[str, Item]]) -> str:
    """The ``@signature-params`` value: the inner list with its parameters (RFC 8941 §4.1)."""
    inner = " ".join(_serialize(c) for c in components)
    tail = "".join(f";{k}" if v is True else f";{k}={_serialize(v)}" for k, v in params)
    return f"({inner}){tail}"
