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

import re

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
    pw = src.params.get("password")
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
    kw = {k: p[k] for k in ("host", "port", "dbname", "user", "password") if p.get(k)}
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


def read_raw(src: LayerSource, key: str | None = None) -> RawLayer:
    """Every row of a postgis layer in key order: 2D WKB, used attributes, keys, CRS."""

    psycopg = _psycopg(src)
    sql = psycopg.sql

    table = (src.params.get("table") or src.layer or "").strip()
    if not table:
        raise SourceError(f"layer {src.name!r}: the postgis datasource has no 'table' parameter")
    if _TOKEN.search(table):
        raise SourceError(
            f"layer {src.name!r}: the table subquery uses Mapnik tokens "
            f"({', '.join(sorted(set(_TOKEN.findall(table))))}); tiledelta reads the whole "
            "layer once, so remove them from the query"
        )
    conn = connect(src)
    try:
        with conn, conn.cursor() as cur:
            oid, from_ = _relation(cur, src, table)
            shown = table if oid is None else from_
            relation = sql.SQL(from_)  # a quoted name from the catalog, or the style's subquery
            try:
                cur.execute(sql.SQL("SELECT * FROM {} AS src LIMIT 0").format(relation))
            except psycopg.Error as exc:
                raise SourceError(
                    f"layer {src.name!r}: cannot query {shown} in {where(src)} "
                    f"({_reason(exc, src)})"
                ) from None
            cols = [(d.name, d.type_code) for d in cur.description or []]
            fields = [c for c, _t in cols]
            cur.execute(
                "SELECT oid, typname FROM pg_type WHERE typname IN ('geometry', 'geography')"
            )
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
                    sql.SQL(
                        "SELECT ST_SRID({g}) FROM {r} AS src WHERE {g} IS NOT NULL LIMIT 1"
                    ).format(g=geom, r=relation)
                )
                row = cur.fetchone()
                srid = int(row[0]) if row and row[0] else 0
            crs = _crs(cur, src, srid)

            # Each column once: the key column(s), then the attributes the style uses.
            names = list(dict.fromkeys(key_fields + wanted))
            query = sql.SQL(
                "SELECT ST_AsBinary(ST_Force2D({g}), 'NDR'), {cols} FROM {r} AS src "
                "WHERE {g} IS NOT NULL ORDER BY {order}"
            ).format(
                g=geom,
                cols=sql.SQL(", ").join(sql.SQL("src.{}").format(sql.Identifier(n)) for n in names),
                r=relation,
                # Ties (a key that is not unique) fall back to the geometry's bytes.
                order=sql.SQL(", ").join(
                    [sql.SQL(str(i + 2)) for i in range(len(key_fields))] + [sql.SQL("1")]
                ),
            )
            wkb: list = []
            values: list[list] = [[] for _ in names]
            with conn.cursor(name="tiledelta_read", binary=True) as rows:
                rows.itersize = ITERSIZE
                try:
                    rows.execute(query)
                    while batch := rows.fetchmany(ITERSIZE):
                        for r in batch:
                            wkb.append(r[0])
                            for col, v in zip(values, r[1:], strict=True):
                                col.append(v)
                except psycopg.Error as exc:
                    raise SourceError(
                        f"layer {src.name!r}: cannot read {shown} in {where(src)} "
                        f"({_reason(exc, src)})"
                    ) from None
    except psycopg.Error as exc:
        raise SourceError(
            f"layer {src.name!r}: cannot read {table} in {where(src)} ({_reason(exc, src)})"
        ) from None
    finally:
        conn.close()

    by_name = dict(zip(names, values, strict=True))
    if len(key_fields) == 1:
        keys = by_name[key_fields[0]]
    else:
        keys = [
            ",".join(str(v) for v in t) for t in zip(*(by_name[k] for k in key_fields), strict=True)
        ]
    geoms = np.empty(len(wkb), dtype=object)
    geoms[:] = [bytes(g) for g in wkb]
    ids = np.empty(len(keys), dtype=object)
    ids[:] = keys
    return RawLayer(
        wkb=geoms,
        fields={a: by_name[a] for a in wanted},
        ids=ids,
        crs=crs,
        label=f"{shown} in {where(src)}",
        keyed=True,  # ordered and identified by the key or the primary key
    )
