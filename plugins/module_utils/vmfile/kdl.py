# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A KDL reader (v1 and v2 spellings) that remembers where every node, argument and property is.

kdl-py and ckdl build trees without positions, and the VMFile checker must point at the line and
column of each mistake, so this reader keeps them. It accepts both spellings in one grammar:
``true``/``#true``, ``null``/``#null``, raw strings ``r"…"``/``r#"…"#`` and ``#"…"#``, bare
identifiers as values (v2), ``;`` and newlines as node ends, ``/-`` slashdash, ``//`` and nested
``/* */`` comments, ``\\`` line continuations and ``(type)`` annotations (kept, not interpreted).
"""

from __future__ import annotations

__metaclass__ = type

import re


MAX_DEPTH = 64


class KdlSyntaxError(Exception):
    def __init__(self, message, line, col, hint=None):
        super().__init__(message)
        self.message, self.line, self.col, self.hint = message, line, col, hint


class Value:
    __slots__ = ("value", "line", "col", "bare")

    def __init__(self, value, line, col, bare=False):
        self.value, self.line, self.col, self.bare = value, line, col, bare

    def __repr__(self):
        return "Value(%r @%d:%d)" % (self.value, self.line, self.col)


class Node:
    __slots__ = ("name", "line", "col", "args", "props", "children", "children_pos", "repeated")

    def __init__(self, name, line, col):
        self.name, self.line, self.col = name, line, col
        self.args = []
        self.props = {}  # key -> (key_line, key_col, Value); a repeated key keeps the last (KDL's rule)
        self.repeated = []  # (key, key_line, key_col) of each repetition, for checkers that refuse them
        self.children = None
        self.children_pos = None

    def __repr__(self):
        return "Node(%r @%d:%d)" % (self.name, self.line, self.col)


_KEYWORDS = {"true": True, "false": False, "null": None, "#true": True, "#false": False, "#null": None,
             "#inf": float("inf"), "#-inf": float("-inf"), "#nan": float("nan")}
_NUMBER = re.compile(r"[+-]?(0x[0-9a-fA-F][0-9a-fA-F_]*|0o[0-7][0-7_]*|0b[01][01_]*"
                     r"|[0-9][0-9_]*(\.[0-9][0-9_]*)?([eE][+-]?[0-9][0-9_]*)?)$")
_NON_IDENT = set('\\/(){}<>;[]=,"# \t\r\n\ufeff')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "/": "/", "b": "\b", "f": "\f", "s": " "}
_NEWLINES = "\n\r\u0085\u000b\u000c\u2028\u2029"
# Code points KDL forbids anywhere in a document: control characters, bidi overrides, a BOM after the start.
_DISALLOWED = re.compile("[\x00-\x08\x0e-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
_SPACES = " \t\ufeff\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"


class _Reader:
    def __init__(self, text):
        self.text = text
        self.i = 0
        self.line = 1
        self.col = 1
        self.depth = 0

    # --- low level -------------------------------------------------------------------------------
    def peek(self, n=0):
        j = self.i + n
        return self.text[j] if j < len(self.text) else ""

    def startswith(self, s):
        return self.text.startswith(s, self.i)

    def advance(self, n=1):
        for _step in range(n):
            if self.i >= len(self.text):
                return
            ch = self.text[self.i]
            self.i += 1
            if ch == "\r" and self.peek() == "\n":
                self.col += 1
            elif ch in _NEWLINES:
                self.line += 1
                self.col = 1
            else:
                self.col += 1

    def error(self, message, hint=None, line=None, col=None):
        raise KdlSyntaxError(message, line or self.line, col or self.col, hint)

    # --- whitespace and comments -------------------------------------------------------------------
    def skip_block_comment(self):
        line, col = self.line, self.col
        self.advance(2)
        depth = 1
        while depth:
            if self.i >= len(self.text):
                self.error("unterminated /* comment", "Close it with */", line, col)
            if self.startswith("/*"):
                depth += 1
                self.advance(2)
            elif self.startswith("*/"):
                depth -= 1
                self.advance(2)
            else:
                self.advance()

    def skip_line_comment(self):
        while self.i < len(self.text) and self.peek() not in _NEWLINES:
            self.advance()

    def skip_ws(self, newlines=False):
        """Skip spaces, comments and line continuations (and newlines when ``newlines``)."""
        while self.i < len(self.text):
            ch = self.peek()
            if ch in _SPACES:
                self.advance()
            elif newlines and ch in _NEWLINES:
                self.advance()
            elif self.startswith("/*"):
                self.skip_block_comment()
            elif self.startswith("//"):
                self.skip_line_comment()
            elif ch == "\\":  # line continuation
                self.advance()
                while self.peek() in _SPACES and self.peek():
                    self.advance()
                if self.startswith("//"):
                    self.skip_line_comment()
                if self.peek() in _NEWLINES and self.peek():
                    self.advance()
                elif self.peek():
                    self.error("a \\ outside a string must end the line", "Remove the \\ or put the rest on the next line")
            else:
                return

    # --- values ----------------------------------------------------------------------------------
    def read_quoted(self):
        line, col = self.line, self.col
        if self.startswith('"""'):
            return self.read_multiline(line, col)
        j = self.i + 1
        while j < len(self.text) and self.text[j] != '"':
            j += 2 if self.text[j] == "\\" else 1
        if j >= len(self.text):
            self.error("unterminated string", 'Close it with "', line, col)
        body = self.text[self.i + 1:j]
        try:
            value = _unescape(body)
        except _EscapeError as err:
            self.advance(1 + err.offset)
            self.error(err.message, err.hint)
        self.advance(j + 1 - self.i)
        return value

    def read_multiline(self, line, col, closing='"""', raw=False):
        """A \"\"\" string (at its opening quotes), dedented by its closing line; escapes applied unless ``raw``."""
        self.advance(3)
        close = self.text.find(closing, self.i)
        while not raw and close > 0 and _escaped(self.text, close):
            close = self.text.find(closing, close + 1)
        if close < 0:
            self.error('unterminated """ string', "Close it with %s" % closing, line, col)
        body = self.text[self.i:close]
        self.advance(close + len(closing) - self.i)
        lines = re.split(r"\r\n|[%s]" % _NEWLINES, body)
        indent = lines[-1]
        if len(lines) < 2 or lines[0].strip(_SPACES) or indent.strip(_SPACES):
            self.error('a """ string must start with a line break and end with """ on a line of its own',
                       'Write """, the text on the lines below, then """ alone on the last line', line, col)
        for text in lines[1:-1]:
            if text.strip(_SPACES) and not text.startswith(indent):
                self.error('a line of this """ string is indented less than its closing """',
                           'Indent every line at least as far as the closing """', line, col)
        text = "\n".join(ln[len(indent):] for ln in lines[1:-1])
        if raw:
            return text
        try:
            return _unescape(text)
        except _EscapeError as err:
            self.error(err.message, err.hint, line, col)

    def read_raw(self):
        line, col = self.line, self.col
        if self.peek() == "r":
            self.advance()
        hashes = 0
        while self.peek() == "#":
            hashes += 1
            self.advance()
        if self.peek() != '"':
            self.error("malformed raw string", 'Write r"…", r#"…"# or #"…"#', line, col)
        if self.startswith('"""'):
            return self.read_multiline(line, col, '"""' + "#" * hashes, raw=True)
        self.advance()
        close = '"' + "#" * hashes
        end = self.text.find(close, self.i)
        if end < 0:
            self.error("unterminated raw string", "Close it with %s" % close, line, col)
        body = self.text[self.i:end]
        self.advance(end + len(close) - self.i)
        return body

    def read_bare(self):
        start = self.i
        if self.peek() == "#":  # v2 keywords: #true, #null, #inf, ...
            self.advance()
        while self.i < len(self.text) and self.peek() not in _NON_IDENT and self.peek() not in _NEWLINES \
                and self.peek() not in _SPACES:
            self.advance()
        return self.text[start:self.i]

    def read_value(self):
        """A value: ``(Value, is_identifier_token)``."""
        line, col = self.line, self.col
        if self.peek() == "(":
            self.read_type()
            self.skip_ws()
            line, col = self.line, self.col
        ch = self.peek()
        if ch == '"':
            return Value(self.read_quoted(), line, col), False
        if ch in ("r", "#") and self.peek(1) and self.peek(1) in '"#':
            return Value(self.read_raw(), line, col), False
        word = self.read_bare()
        if not word:
            self.error("unexpected %r" % (ch or "end of file"), "Values are strings, numbers, true/false (#true/#false) or null")
        if word in _KEYWORDS:
            return Value(_KEYWORDS[word], line, col), False
        if word[0] == "#":
            self.error("unknown keyword %s" % word, "Use #true, #false, #null, #inf, #-inf or #nan", line, col)
        if _NUMBER.match(word):
            return Value(_number(word), line, col), False
        if re.match(r"[+-]?\.?[0-9]", word):
            self.error("malformed number %s" % word, "Write a number like 2, 2048 or 1.5 (or quote it to make it a string)", line, col)
        return Value(word, line, col, bare=True), True

    def read_type(self):
        self.advance()
        self.skip_ws()
        if self.peek() == '"':
            self.read_quoted()
        else:
            self.read_bare()
        self.skip_ws()
        if self.peek() != ")":
            self.error("unterminated type annotation", "Close it with )")
        self.advance()

    # --- nodes -----------------------------------------------------------------------------------
    def read_nodes(self, closing=None):
        """Nodes up to the end of the text, or up to the } closing the { at ``closing`` (line, col)."""
        nodes = []
        while True:
            self.skip_ws(newlines=True)
            while self.peek() == ";":
                self.advance()
                self.skip_ws(newlines=True)
            ch = self.peek()
            if ch == "":
                if closing:
                    self.error("this { block is not closed", "Add the missing }", *closing)
                return nodes
            if ch == "}":
                if not closing:
                    self.error("unexpected }", "Remove it, or open the block it closes")
                return nodes
            slashdash = self.startswith("/-")
            if slashdash:
                self.advance(2)
                self.skip_ws(newlines=True)
            node = self.read_node()
            if not slashdash:
                nodes.append(node)

    def read_node(self):
        if self.peek() == "(":
            self.read_type()
        line, col = self.line, self.col
        value, _ident = self.read_value()
        if not isinstance(value.value, str) or (not _ident and self.text[self.i - 1:self.i] not in ('"', "#")):
            self.error("a node name must be an identifier or a string, not %r" % (value.value,), "Quote it", line, col)
        node = Node(value.value, line, col)
        while True:
            before = self.i
            self.skip_ws()
            ch = self.peek()
            if ch == "" or ch in _NEWLINES or ch == ";":
                if ch:
                    self.advance()
                return node
            if ch == "}":
                return node
            if before == self.i and ch != "{" and not self.startswith("/-"):
                self.error("expected a space before %r" % ch, "Separate arguments and properties with spaces")
            slashdash = self.startswith("/-")
            if slashdash:
                self.advance(2)
                self.skip_ws(newlines=True)
                ch = self.peek()
            if ch == "{":
                pos = (self.line, self.col)
                if self.depth >= MAX_DEPTH:
                    self.error("blocks nested more than %d deep" % MAX_DEPTH, "A VMFile needs three levels at most")
                self.advance()
                self.depth += 1
                children = self.read_nodes(closing=pos)
                self.depth -= 1
                self.advance()  # the }
                if not slashdash:
                    if node.children is not None:
                        self.error("node %s has two { } blocks" % node.name, "Merge them into one", *pos)
                    node.children, node.children_pos = children, pos
                continue
            if node.children is not None and not slashdash:
                self.error("arguments after the { } block of %s" % node.name, "Put arguments and properties before the block")
            self.read_entry(node, slashdash)

    def read_entry(self, node, slashdash):
        kline, kcol = self.line, self.col
        value, ident = self.read_value()
        before = self.i, self.line, self.col
        self.skip_ws()
        if self.peek() == "=" and (ident or isinstance(value.value, str)):
            self.advance()
            self.skip_ws()
            vline, vcol = self.line, self.col
            if self.peek() in _SPACES or self.peek() in _NEWLINES or not self.peek():
                self.error("property %s has no value after =" % value.value, 'Write %s="value"' % value.value, vline, vcol)
            prop_value, _bare = self.read_value()
            if not slashdash:
                if value.value in node.props:
                    node.repeated.append((value.value, kline, kcol))
                node.props[value.value] = (kline, kcol, prop_value)
            return
        self.i, self.line, self.col = before
        if not slashdash:
            node.args.append(value)


class _EscapeError(Exception):
    def __init__(self, message, hint, offset):
        super().__init__(message)
        self.message, self.hint, self.offset = message, hint, offset


def _escaped(text, i):
    """Whether text[i] follows an odd number of backslashes."""
    j = i
    while j > 0 and text[j - 1] == "\\":
        j -= 1
    return (i - j) % 2 == 1


def _unescape(body):
    """A string body with its escapes applied; _EscapeError (offset of the backslash) for a bad one."""
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1:i + 2]
        if esc in _ESCAPES and esc:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc == "u" and body[i + 2:i + 3] == "{":
            end = body.find("}", i)
            digits = body[i + 3:end] if end > 0 else ""
            if not re.fullmatch(r"[0-9a-fA-F]{1,6}", digits) or int(digits, 16) > 0x10FFFF or 0xD800 <= int(digits, 16) <= 0xDFFF:
                raise _EscapeError("invalid \\u{…} escape", hint="Use \\u{hex}, e.g. \\u{e9}", offset=i)
            out.append(chr(int(digits, 16)))
            i = end + 1
        elif esc and (esc in _SPACES or esc in _NEWLINES):  # v2 whitespace escape
            i += 1
            while i < len(body) and (body[i] in _SPACES or body[i] in _NEWLINES):
                i += 1
        else:
            raise _EscapeError("unknown escape \\%s in a string" % esc,
                               hint='Use \\\\ for a backslash; raw strings (r"…" or #"…"#) keep it as is', offset=i)
    return "".join(out)


def _number(word):
    clean = word.replace("_", "")
    sign = -1 if clean.startswith("-") else 1
    body = clean.lstrip("+-")
    for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
        if body.startswith(prefix):
            return sign * int(body[2:], base)
    if any(c in body for c in ".eE"):
        return float(clean)
    return int(clean)


def parse(text):
    """The document's top-level nodes, each with positions; raises KdlSyntaxError."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = _Reader(text)
    bad = _DISALLOWED.search(text)
    if bad:
        reader.advance(bad.start())
        reader.error("the invisible character U+%04X is not allowed in KDL" % ord(bad.group()),
                     "Delete it (it often comes with pasted text)")
    return reader.read_nodes()
