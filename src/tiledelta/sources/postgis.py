"""Read a PostGIS layer with psycopg, in a stable order (the GDAL in pyogrio has no PostgreSQL).

A Mapnik ``<Datasource type="postgis">`` names the connection (host, port, dbname, user,
password; libpq also reads ``PGPASSWORD`` and ``~/.pgpass``), a ``table`` that is a table
name (schema-qualified allowed) or a subquery ``(SELECT ...) AS t``, and optionally
``geometry_field``, ``srid`` and ``key_field``.

PostgreSQL returns rows in heap order, which UPDATE and VACUUM FULL change; so the rows are
read ``ORDER BY`` the project's key field (``[layers.<name>] key``), else the datasource's
``key_field``, else the table's primary key, and a layer with none of these is refused.
Only the geometry (2D WKB) and the attributes the style uses are fetched, through a
server-side cursor so a big table is streamed. :func:`read_raw` returns what
:func:`tiledelta.sources.read_layer` turns into a :class:`~tiledelta.sources.LayerData`,
exactly as for a file. The password is never logged nor put into an error message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledelta.errors import SourceError
from tiledelta.sources.types import RawLayer, require_fields
from tiledelta.style import LayerSource

#: Rows fetched per round trip from the server-side cursor.
ITERSIZE = 5000
_SUBQUERY = re.compile(r"^\s*(\(.*\))\s*(?:as\s+)?(?:\w+|\"[^\"]+\")?\s*$", re.S | re.I)
_TOKEN = re.compile(r"![a-z_]+!", re.I)


def where(src: LayerSource) -> str:
    """Where the layer's data is, for messages: never the password."""
    p = src.params
    host = p.get("host") or "the local socket"
    port = f":{p['port']}" if p.get("port") else ""
    db = p.get("dbname") or "(default database)"
    return f"PostgreSQL database {db!r} on {host}{port}"


def _scrub(text: str, src: LayerSource) -> str:
    """``text`` on one line, with the password (if any) blanked out."""
    text = " ".join(str(text).split())
    pw = reveal(src.params.get("password"))
    return text.replace(pw, "***") if pw else text


def _reason(exc: Exception, src: LayerSource) -> str:
    """The useful line of a libpq / server error (libpq never echoes the password; it is
    blanked out all the same)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "FATAL:" in ln or "failed:" in ln]
    line = (fatal[-1] if fatal else lines[0]) if lines else type(exc).__name__
    line = re.sub(r"^connection failed:\s*", "", line)
    line = re.sub(r"^connection to server at .*? failed:\s*", "", line)
    line = line.replace("FATAL:", "").strip()
    return _scrub(line, src)


def _psycopg(src: LayerSource):
    # Imported on first use: only PostGIS layers need it, and it names the fix if absent.
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise SourceError(
            f"layer {src.name!r}: reading PostGIS needs psycopg; pip install 'psycopg[binary]'"
        ) from exc
    return psycopg


def connect(src: LayerSource):
    """A psycopg connection for a postgis layer; :class:`SourceError` if it cannot be made."""
    psycopg = _psycopg(src)
    p = src.params
    kw = {k: reveal(p[k]) for k in ("host", "port", "dbname", "user", "password") if p.get(k)}
    kw["connect_timeout"] = p.get("connect_timeout") or "10"
    try:
        conn = psycopg.connect(application_name="tiledelta", autocommit=False, **kw)
    except psycopg.Error as exc:
        who = f" as {p['user']!r}" if p.get("user") else ""
        reason = _reason(exc, src)
        hint = ""
        if "password" in reason.lower():
            hint = "; check the password parameter, PGPASSWORD or ~/.pgpass"
        raise SourceError(
            f"layer {src.name!r}: cannot connect to {where(src)}{who} ({reason}){hint}"
        ) from None
    # One snapshot for the catalog look-ups and the rows; never write.
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def _relation(cur, src: LayerSource, table: str) -> tuple[int | None, str]:
    """(oid or None, FROM expression) for the ``table`` parameter."""
    m = _SUBQUERY.match(table)
    if table.lstrip().startswith("(") and m:
        return None, m.group(1)
    cur.execute("SELECT to_regclass(%s)::oid", (table,))
    oid = cur.fetchone()[0]
    if oid is None:
        raise SourceError(
            f"layer {src.name!r}: table {table!r} does not exist in {where(src)}; "
            "fix the table parameter in the style"
        )
    cur.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
        (oid,),
    )
    return oid, cur.fetchone()[0]


def _primary_key(cur, oid: int) -> list[str]:
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
        "WHERE i.indrelid = %s AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (oid,),
    )
    return [r[0] for r in cur.fetchall()]


def _crs(cur, src: LayerSource, srid: int) -> str | None:
    """A CRS pyproj understands for a PostGIS SRID (EPSG code, else the stored WKT/proj)."""
    if srid <= 0:
        return None
    cur.execute(
        "SELECT auth_name, auth_srid, srtext, proj4text FROM spatial_ref_sys WHERE srid = %s",
        (srid,),
    )
    row = cur.fetchone()
    if row is None:
        raise SourceError(
            f"layer {src.name!r}: SRID {srid} is not in spatial_ref_sys of {where(src)}"
        )
    auth, code, wkt, proj = row
    if (auth or "").upper() == "EPSG" and code:
        return f"EPSG:{code}"
    return (wkt or proj or "").strip() or None


@dataclass
class _Query:
    """What the catalog says about a layer: how to select its rows, in which order."""

    relation: Any  # psycopg.sql: the quoted table, or the style's subquery
    geom: Any  # psycopg.sql: the geometry expression
    names: list[str]  # the columns fetched after the geometry: the key(s), then attributes
    key_fields: list[str]
    wanted: list[str]
    crs: str | None
    shown: str  # the table for messages


def _table(src: LayerSource) -> str:
    table = (src.params.get("table") or src.layer or "").strip()
    if not table:
        raise SourceError(f"layer {src.name!r}: the postgis datasource has no 'table' parameter")
    if _TOKEN.search(table):
        raise SourceError(
            f"layer {src.name!r}: the table subquery uses Mapnik tokens "
            f"({', '.join(sorted(set(_TOKEN.findall(table))))}); tiledelta reads the whole "
            "layer once, so remove them from the query"
        )
    return table


def _prepare(cur, src: LayerSource, key: str | None) -> _Query:
    """The catalog look-ups: geometry column, key column(s), SRID and CRS."""
    psycopg = _psycopg(src)
    sql = psycopg.sql
    table = _table(src)
    oid, from_ = _relation(cur, src, table)
    shown = table if oid is None else from_
    relation = sql.SQL(from_)  # a quoted name from the catalog, or the style's subquery
    try:
        cur.execute(sql.SQL("SELECT * FROM {} AS src LIMIT 0").format(relation))
    except psycopg.Error as exc:
        raise SourceError(
            f"layer {src.name!r}: cannot query {shown} in {where(src)} ({_reason(exc, src)})"
        ) from None
    cols = [(d.name, d.type_code) for d in cur.description or []]
    fields = [c for c, _t in cols]
    cur.execute("SELECT oid, typname FROM pg_type WHERE typname IN ('geometry', 'geography')")
    gtypes = {o: n for o, n in cur.fetchall()}
    geo_cols = [c for c, t in cols if t in gtypes]
    gfield = src.params.get("geometry_field")
    if gfield:
        if gfield not in fields:
            raise SourceError(
                f"layer {src.name!r}: geometry_field {gfield!r} is not a column of "
                f"{shown} (columns: {', '.join(fields) or 'none'})"
            )
    elif len(geo_cols) == 1:
        gfield = geo_cols[0]
    elif not geo_cols:
        raise SourceError(
            f"layer {src.name!r}: {shown} has no geometry column "
            f"(columns: {', '.join(fields) or 'none'})"
        )
    else:
        raise SourceError(
            f"layer {src.name!r}: {shown} has several geometry columns "
            f"({', '.join(geo_cols)}); set the geometry_field parameter in the style"
        )
    gtype = dict(cols)[gfield]
    attr_fields = [c for c in fields if c != gfield]

    wanted = list(src.attributes)
    require_fields(src, attr_fields, key, shown)
    key_fields: list[str]
    if key:
        key_fields = [key]
    elif src.params.get("key_field") in attr_fields:
        key_fields = [src.params["key_field"]]
    else:
        key_fields = _primary_key(cur, oid) if oid is not None else []
    if not key_fields:
        what = "the subquery" if oid is None else f"table {shown} has no primary key and"
        raise SourceError(
            f"layer {src.name!r}: {what} gives rows in no stable order (heap order "
            "changes on UPDATE and VACUUM FULL); set [layers."
            f'{src.name}] key = "<a unique column>" in tiledelta.toml'
        )

    geom = sql.SQL("src.{}").format(sql.Identifier(gfield))
    if gtypes.get(gtype) == "geography":
        geom = sql.SQL("{}::geometry").format(geom)
    srid = int(src.params.get("srid") or 0)
    if srid <= 0 and oid is not None and gtypes.get(gtype) == "geometry":
        cur.execute(
            "SELECT srid FROM geometry_columns WHERE format('%%I.%%I', "
            "f_table_schema, f_table_name) = %s AND f_geometry_column = %s",
            (from_, gfield),
        )
        row = cur.fetchone()
        srid = int(row[0]) if row and row[0] else 0
    if srid <= 0:
        cur.execute(
            sql.SQL("SELECT ST_SRID({g}) FROM {r} AS src WHERE {g} IS NOT NULL LIMIT 1").format(
                g=geom, r=relation
            )
        )
        row = cur.fetchone()
        srid = int(row[0]) if row and row[0] else 0
    crs = _crs(cur, src, srid)
    # Each column once: the key column(s), then the attributes the style uses.
    names = list(dict.fromkeys(key_fields + wanted))
    return _Query(relation, geom, names, key_fields, wanted, crs, shown)


def _key_column(src: LayerSource, q: _Query):
    """The one key column (psycopg.sql), for reading by key; refused for a composite key."""
    if len(q.key_fields) != 1:
        raise SourceError(
            f"layer {src.name!r}: the Dask engine reads PostGIS layers by one key column and "
            f"{q.shown} has a composite primary key ({', '.join(q.key_fields)}); set "
            f'[layers.{src.name}] key = "<a unique column>" or use [render] engine = "local"'
        )
    return _psycopg(src).sql.SQL("src.{}").format(_psycopg(src).sql.Identifier(q.key_fields[0]))


def _fetch(conn, src: LayerSource, q: _Query, cond: Any = None, args: tuple = ()) -> RawLayer:
    """The rows (those meeting ``cond``, a psycopg.sql condition on ``src``) in key order."""
    psycopg = _psycopg(src)
    sql = psycopg.sql
    query = sql.SQL(
        "SELECT ST_AsBinary(ST_Force2D({g}), 'NDR'), {cols} FROM {r} AS src "
        "WHERE {g} IS NOT NULL{cond} ORDER BY {order}"
    ).format(
        g=q.geom,
        cols=sql.SQL(", ").join(sql.SQL("src.{}").format(sql.Identifier(n)) for n in q.names),
        r=q.relation,
        cond=sql.SQL("") if cond is None else sql.SQL(" AND ({})").format(cond),
        # Ties (a key that is not unique) fall back to the geometry's bytes.
        order=sql.SQL(", ").join(
            [sql.SQL(str(i + 2)) for i in range(len(q.key_fields))] + [sql.SQL("1")]
        ),
    )
    wkb: list = []
    values: list[list] = [[] for _ in q.names]
    with conn.cursor(name="tiledelta_read", binary=True) as rows:
        rows.itersize = ITERSIZE
        try:
            rows.execute(query, args or None)
            while batch := rows.fetchmany(ITERSIZE):
                for r in batch:
                    wkb.append(r[0])
                    for col, v in zip(values, r[1:], strict=True):
                        col.append(v)
        except psycopg.Error as exc:
            raise SourceError(
                f"layer {src.name!r}: cannot read {q.shown} in {where(src)} ({_reason(exc, src)})"
            ) from None
    by_name = dict(zip(q.names, values, strict=True))
    if len(q.key_fields) == 1:
        keys = by_name[q.key_fields[0]]
    else:
        keys = [
            ",".join(str(v) for v in t)
            for t in zip(*(by_name[k] for k in q.key_fields), strict=True)
        ]
    geoms = np.empty(len(wkb), dtype=object)
    geoms[:] = [bytes(g) for g in wkb]
    ids = np.empty(len(keys), dtype=object)
    ids[:] = keys
    return RawLayer(
        wkb=geoms,
        fields={a: by_name[a] for a in q.wanted},
        ids=ids,
        crs=q.crs,
        label=f"{q.shown} in {where(src)}",
        keyed=True,  # ordered and identified by the key or the primary key
    )


def _session(src: LayerSource, snapshot: str | None):
    """A read-only connection; in the exported ``snapshot`` (:class:`ReadSnapshot`) if given."""
    conn = connect(src)
    if snapshot:
        psycopg = _psycopg(src)
        try:
            conn.execute(
                psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot))
            )
        except psycopg.Error as exc:
            conn.close()
            raise SourceError(
                f"layer {src.name!r}: cannot read the run's snapshot of {where(src)} "
                f"({_reason(exc, src)}); the client's connection to the database was lost, "
                "run again"
            ) from None
    return conn


#: A key range ``(lo, hi)``: rows with ``lo <= key < hi``; None is open (the last range
#: also holds the rows whose key is NULL, which ``ORDER BY`` puts last).
KeyRange = tuple[Any, Any]


def read_raw(
    src: LayerSource,
    key: str | None = None,
    *,
    key_range: KeyRange | None = None,
    keys: Sequence[Any] | None = None,
    snapshot: str | None = None,
) -> RawLayer:
    """The rows of a postgis layer in key order: 2D WKB, used attributes, keys, CRS.

    Every row, or (the Dask engine) those of one ``key_range``, or those whose key is in
    ``keys``; ``snapshot`` is a snapshot exported by :class:`ReadSnapshot`, so every part
    of a run reads the same data."""
    psycopg = _psycopg(src)
    sql = psycopg.sql
    table = _table(src)
    conn = _session(src, snapshot)
    try:
        with conn, conn.cursor() as cur:
            q = _prepare(cur, src, key)
            cond: Any = None
            args: tuple = ()
            if key_range is not None:
                k = _key_column(src, q)
                lo, hi = key_range
                parts, args_l = [], []
                if lo is not None:
                    parts.append(sql.SQL("{} >= %s").format(k))
                    args_l.append(lo)
                if hi is not None:
                    parts.append(sql.SQL("{} < %s").format(k))
                    args_l.append(hi)
                if parts:
                    cond = sql.SQL(" AND ").join(parts)
                    if hi is None:  # NULL keys come last in key order
                        cond = sql.SQL("{} OR {} IS NULL").format(cond, k)
                args = tuple(args_l)
            elif keys is not None:
                k = _key_column(src, q)
                values = [v for v in keys if v is not None]
                cond = sql.SQL("{} = ANY(%s)").format(k)
                if len(values) < len(keys):
                    cond = sql.SQL("{} OR {} IS NULL").format(cond, k)
                args = (values,)
            return _fetch(conn, src, q, cond, args)
    except psycopg.Error as exc:
        raise SourceError(
            f"layer {src.name!r}: cannot read {table} in {where(src)} ({_reason(exc, src)})"
        ) from None
    finally:
        conn.close()


def check(src: LayerSource, key: str | None) -> str | None:
    """Why ``src`` cannot be read here by key (a Dask worker's start check), or None."""
    try:
        conn = connect(src)
        try:
            with conn, conn.cursor() as cur:
                _key_column(src, _prepare(cur, src, key))
        finally:
            conn.close()
    except SourceError as exc:
        return str(exc)
    return None


class ReadSnapshot:
    """One transaction held open on the client for a Dask run: its snapshot is exported
    (``pg_export_snapshot``), the workers read their key ranges and render tasks' features
    in it, so the whole run sees one state of the table, as a local read does."""

    def __init__(self, src: LayerSource, key: str | None) -> None:
        self.src, self.key = src, key
        self.conn = connect(src)
        try:
            self.snapshot: str = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            with self.conn.cursor() as cur:
                self.query = _prepare(cur, src, key)
                self.column = _key_column(src, self.query)
        except BaseException:
            self.conn.close()
            raise

    def ranges(self, size: int) -> tuple[int, list[KeyRange]]:
        """(rows, key ranges of about ``size`` rows each, in key order, covering them all)."""
        psycopg = _psycopg(self.src)
        sql = psycopg.sql
        q, k = self.query, self.column
        try:
            with self.conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {r} AS src WHERE {g} IS NOT NULL").format(
                        r=q.relation, g=q.geom
                    )
                )
                rows = int(cur.fetchone()[0])
                cur.execute(
                    sql.SQL(
                        "SELECT b FROM (SELECT {k} AS b, row_number() OVER (ORDER BY {k}) AS rn "
                        "FROM {r} AS src WHERE {g} IS NOT NULL AND {k} IS NOT NULL) AS s "
                        "WHERE rn % {n} = 1 AND rn > 1 ORDER BY rn"
                    ).format(k=k, r=q.relation, g=q.geom, n=sql.Literal(max(1, size)))
                )
                bounds = [r[0] for r in cur.fetchall()]
        except psycopg.Error as exc:
            raise SourceError(
                f"layer {self.src.name!r}: cannot read {q.shown} in {where(self.src)} "
                f"({_reason(exc, self.src)})"
            ) from None
        edges = [None, *bounds, None]
        return rows, list(zip(edges[:-1], edges[1:], strict=True))

    def close(self) -> None:
        """End the transaction (the exported snapshot goes with it)."""
        with contextlib.suppress(Exception):
            self.conn.close()


class Secret:
    """A password that never shows: ``repr`` and ``str`` give ``***`` (Dask prints task
    arguments when a task fails); :meth:`reveal` gives it to libpq."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple:
        return (Secret, (self._value,))


def reveal(value: object) -> str | None:
    """The text of a parameter that may be a :class:`Secret`."""
    if value is None:
        return None
    return value.reveal() if isinstance(value, Secret) else str(value)


def redacted(src: LayerSource) -> LayerSource:
    """``src`` fit to travel in a task: its password (if any) a :class:`Secret`, its
    connection path without it. Other layers are returned as they are."""
    if src.kind != "postgis" or not src.params.get("password"):
        return src
    params = dict(src.params)
    params["password"] = Secret(reveal(params["password"]) or "")  # type: ignore[assignment]
    conn = " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if params.get(k))
    return dataclasses.replace(src, params=params, path=f"PG:{conn} password=***")
