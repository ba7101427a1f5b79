"""The fields an ArcGIS expression reads, and ArcGIS SQL as GDAL applies it.

- Arcade: ``$feature.NAME``, ``$feature["NAME"]``, and the field names given to
  ``Expects``, ``DomainName`` and ``DomainCode``. A ``$feature`` used any other way
  (``$feature[name]``, passed to a function), or ``$layer``/``$map``/``$datastore``/
  ``FeatureSet...``, reads fields we cannot name: the answer is ``None`` (all fields).
- Python, VBScript and JScript label expressions: ``[NAME]``.
- SQL (definition queries, label-class where clauses): the identifiers that are not
  keywords, literals or function names.

:func:`translate_where` turns an ArcGIS SQL where clause into the dialect GDAL applies to
the layer's format (OGR SQL for FileGDB and shapefiles, SQLite for GeoPackage), or says
which function it cannot apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: ``None`` means "cannot tell: every field".
Fields = frozenset[str] | None

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ARCADE_DOT = re.compile(r"\$feature\s*\.\s*(" + _IDENT + ")")
_ARCADE_INDEX = re.compile(r"\$feature\s*\[\s*(['\"])(.*?)\1\s*\]")
_ARCADE_ARGS = re.compile(
    r"\b(Expects|DomainName|DomainCode)\s*\(\s*\$feature\s*((?:,\s*(['\"]).*?\3\s*)*)\)",
    re.IGNORECASE,
)
_ARCADE_STR = re.compile(r"(['\"])(.*?)\1")
_ARCADE_OPAQUE = re.compile(r"\$(layer|map|datastore|view|originalFeature)\b|\bFeatureSet", re.I)
_ARCADE_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_BRACKET = re.compile(r"\[([^\[\]]+)\]")


def _bare(name: str) -> str:
    """A field name without its table qualifier (``county.DBO.parcels.ZONING`` -> ``ZONING``)."""
    return name.strip().rsplit(".", 1)[-1]


def arcade_fields(expr: str) -> Fields:
    """Fields an Arcade expression reads, or ``None`` when it may read any."""
    text = _ARCADE_COMMENT.sub(" ", expr or "")
    if _ARCADE_OPAQUE.search(text):
        return None
    names: set[str] = set()
    names |= {m.group(1) for m in _ARCADE_DOT.finditer(text)}
    names |= {m.group(2) for m in _ARCADE_INDEX.finditer(text)}
    for m in _ARCADE_ARGS.finditer(text):
        args = [s.group(2) for s in _ARCADE_STR.finditer(m.group(2))]
        if any(a == "*" for a in args):
            return None
        names |= set(args)
    rest = _ARCADE_ARGS.sub(" ", _ARCADE_INDEX.sub(" ", _ARCADE_DOT.sub(" ", text)))
    if "$feature" in rest:  # used some other way: whole-feature access
        return None
    return frozenset(_bare(n) for n in names if n)


def bracket_fields(expr: str) -> Fields:
    """Fields of a Python, VBScript or JScript label expression: ``[NAME]``."""
    return frozenset(_bare(m) for m in _BRACKET.findall(expr or "") if m.strip())


def label_fields(expr: str, engine: str) -> Fields:
    """Fields a label expression reads, by its ``expressionEngine``; ``None`` when unknown."""
    eng = (engine or "VBScript").strip().lower()
    if eng == "arcade":
        return arcade_fields(expr)
    if eng in ("vbscript", "python", "jscript"):
        return bracket_fields(expr)
    return None


# --- SQL -------------------------------------------------------------------------------------

_SQL_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")*")
  | (?P<bid>\[[^\]]*\])
  | (?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$#]*(?:\.[A-Za-z_][A-Za-z0-9_$#]*)*)
  | (?P<op><>|<=|>=|!=|\|\||[=<>+\-*/%(),])
    """,
    re.VERBOSE,
)

_KEYWORD_TEXT = """AND OR NOT IN IS NULL LIKE ILIKE BETWEEN ESCAPE TRUE FALSE DATE TIMESTAMP
TIME INTERVAL AS CASE WHEN THEN ELSE END EXISTS ALL ANY SOME DISTINCT CURRENT_DATE
CURRENT_TIME CURRENT_TIMESTAMP FROM FOR SELECT WHERE DAY HOUR MINUTE SECOND MONTH YEAR
CHARACTER CHAR VARCHAR INTEGER INT SMALLINT REAL FLOAT DOUBLE PRECISION NUMERIC DECIMAL
BOTH LEADING TRAILING"""
#: SQL words that are never field names.
KEYWORDS = frozenset(_KEYWORD_TEXT.split())


@dataclass(frozen=True)
class Token:
    kind: str  # str | qid | bid | num | word | op
    text: str


class SqlError(ValueError):
    """A where clause that cannot be read or applied; the message names the part."""


def tokens(sql: str) -> list[Token]:
    """ArcGIS SQL as tokens (whitespace dropped); :class:`SqlError` on a stray character."""
    out, pos = [], 0
    while pos < len(sql):
        m = _SQL_TOKEN.match(sql, pos)
        if not m:
            raise SqlError(f"cannot read the SQL at {sql[pos : pos + 12]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group()))
    return out


def _ident(tok: Token) -> str:
    if tok.kind == "qid":
        return tok.text[1:-1].replace('""', '"')
    if tok.kind == "bid":
        return tok.text[1:-1]
    return tok.text


def sql_fields(sql: str) -> Fields:
    """Field names in an SQL where clause (identifiers that are not keywords or functions);
    ``None`` when the clause cannot be read."""
    try:
        toks = tokens(sql or "")
    except SqlError:
        return None
    names = set()
    for i, tok in enumerate(toks):
        if tok.kind in ("qid", "bid"):
            names.add(_bare(_ident(tok)))
        elif tok.kind == "word" and tok.text.upper() not in KEYWORDS:
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is not None and nxt.text == "(":
                continue  # a function name
            names.add(_bare(tok.text))
    return frozenset(names)


#: Functions GDAL applies, per SQL dialect, with their ArcGIS names (measured with GDAL 3.12
#: through pyogrio's ``where=``: OGR SQL for FileGDB and shapefiles, SQLite for GeoPackage).
FUNCTIONS = {
    "ogr": {"CAST": "CAST", "CONCAT": "CONCAT", "SUBSTR": "SUBSTR"},
    "sqlite": {
        "CAST": "CAST",
        "CONCAT": "CONCAT",
        "SUBSTR": "SUBSTR",
        "UPPER": "UPPER",
        "LOWER": "LOWER",
        "ABS": "ABS",
        "ROUND": "ROUND",
        "TRIM": "TRIM",
        "CHAR_LENGTH": "LENGTH",
        "CHARACTER_LENGTH": "LENGTH",
        "LENGTH": "LENGTH",
    },
}
#: Keywords that are functions of the clock or need an ArcGIS-only form.
_UNAPPLIABLE = {"CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "INTERVAL", "EXTRACT"}


def translate_where(sql: str, dialect: str) -> str:
    """An ArcGIS SQL where clause as GDAL applies it (``dialect`` "ogr" or "sqlite").

    ``date '...'`` and ``timestamp '...'`` literals become plain strings (GDAL compares
    date fields with them), ``[field]`` becomes ``"field"``. :class:`SqlError` names the
    first function or keyword GDAL cannot apply.
    """
    toks = tokens(sql)
    funcs = FUNCTIONS[dialect]
    out: list[str] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        up = tok.text.upper()
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if tok.kind == "word" and up in _UNAPPLIABLE:
            raise SqlError(f"the SQL function {up} cannot be applied by GDAL")
        if tok.kind == "word" and up in ("DATE", "TIMESTAMP") and nxt and nxt.kind == "str":
            i += 1  # the literal follows as a plain string
        elif tok.kind == "word" and nxt is not None and nxt.text == "(":
            if up not in funcs:
                raise SqlError(f"the SQL function {up} cannot be applied by GDAL")
            out.append(funcs[up])
        elif tok.kind == "bid":
            out.append('"' + _ident(tok).replace('"', '""') + '"')
        elif tok.kind == "word" and dialect == "ogr" and up == "ILIKE":
            out.append("ILIKE")
        else:
            out.append(tok.text)
        i += 1
    return " ".join(out)
