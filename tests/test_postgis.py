"""PostGIS layers: read with psycopg in key order, diffed, updated exactly.

Needs a PostgreSQL server with PostGIS at ``TILEDELTA_PG`` (a libpq connection string;
default: the one ``.ci/postgres.sh`` sets up) and skips with the reason when none answers.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pyogrio.raw
import pytest

from tiledelta.api import init_project, load_project, seed, update
from tiledelta.change import detect_changes
from tiledelta.config import LayerConfig
from tiledelta.errors import SourceError
from tiledelta.project import Project
from tiledelta.sources import read_layer, read_layers
from tiledelta.stores import open_project_store
from tiledelta.style import load_style

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")

DSN = os.environ.get(
    "TILEDELTA_PG",
    "host=127.0.0.1 port=5432 dbname=tiledelta_test user=tiledelta password=tiledelta",
)

STYLE = """<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="b">
    <Rule><Filter>[kind] = 'commercial'</Filter><PolygonSymbolizer fill="#cc8844"/></Rule>
    <Rule><ElseFilter/><PolygonSymbolizer fill="#888888"/>
      <LineSymbolizer stroke="#333333" stroke-width="0.5"/></Rule>
  </Style>
  <Layer name="buildings" srs="epsg:4326"><StyleName>b</StyleName>
    <Datasource>{params}</Datasource></Layer>
</Map>
"""


@pytest.fixture(scope="module")
def pg():
    """An autocommit connection to the test database, or skip with the reason."""
    try:
        conn = psycopg.connect(DSN, connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:200]
        pytest.skip(f"no PostgreSQL server answers at TILEDELTA_PG ({reason}); run .ci/postgres.sh")
    with conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone() is None:
            pytest.skip("the TILEDELTA_PG database has no PostGIS; run .ci/postgres.sh")
        yield conn


@pytest.fixture
def table(pg):
    """A fresh table name, dropped afterwards."""
    name = f"td_buildings_{uuid.uuid4().hex[:10]}"
    yield name
    pg.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(scope="module")
def county(sample_template: Path):
    meta, _f, geoms, values = pyogrio.raw.read(
        str(sample_template / "data" / "county.gpkg"), layer="buildings", return_fids=True
    )
    assert meta["crs"] == "EPSG:3857"
    fields = dict(zip(meta["fields"], values, strict=True))
    return list(geoms), [str(k) for k in fields["kind"]], [int(y) for y in fields["year_built"]]


def _load(pg, table: str, county, *, primary_key: bool = True) -> None:
    """The county buildings as WGS 84 polygons, stored in a shuffled order of ``bid``."""
    geoms, kinds, years = county
    pk = "bid serial PRIMARY KEY" if primary_key else "bid integer"
    pg.execute(
        f"CREATE TABLE {table} ({pk}, kind text, year_built integer, geom geometry(Polygon, 4326))"
    )
    order = np.random.default_rng(7).permutation(len(geoms))
    with pg.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} (bid, kind, year_built, geom) "
            "VALUES (%s, %s, %s, ST_Transform(ST_GeomFromWKB(%s, 3857), 4326))",
            [(int(i) + 1, kinds[i], years[i], bytes(geoms[i])) for i in order],
        )
    if primary_key:
        pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'bid'), {len(geoms)})")


def _params(table: str, **extra: str) -> str:
    p = {"type": "postgis", **psycopg.conninfo.conninfo_to_dict(DSN), "table": table}
    p["geometry_field"] = "geom"
    p.update(extra)
    return "".join(f'<Parameter name="{k}">{escape(str(v))}</Parameter>' for k, v in p.items() if v)


def _heap_order(pg, table: str) -> list[int]:
    return [r[0] for r in pg.execute(f"SELECT bid FROM {table}").fetchall()]


def _all_tiles(project_dir: Path) -> dict:
    with open_project_store(Project.load(project_dir), create=False) as s:
        return {a: s.get(*a) for a in s.iter_tiles()}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # [layers.buildings] key = the primary key: an edit is "modified".
        ("bid", (1, 2, 1)),
        # No key configured: the primary key orders the rows and matches features too.
        (None, (1, 2, 1)),
    ],
)
def test_postgis_updates_to_a_fresh_seed(
    pg, table: str, county, tmp_path: Path, key: str | None, expected: tuple
) -> None:
    _load(pg, table, county)
    root = tmp_path / "p"
    root.mkdir()
    (root / "style.xml").write_text(STYLE.format(params=_params(table)))
    init_project(root, style=root / "style.xml", levels="14-16", force=True)
    project = Project.load(root)
    project = project.updated(render={"processes": 1})
    if key:
        project = project.updated(layers={"buildings": LayerConfig(key=key)})
    project.save()
    seed(load_project(root))

    # Move one building, delete one, add one, restyle one, edit an unused attribute for all,
    # then rewrite the table so that its heap order changes.
    pg.execute(f"UPDATE {table} SET geom = ST_Translate(geom, 0.0004, 0) WHERE bid = 20")
    pg.execute(f"DELETE FROM {table} WHERE bid = 10")
    pg.execute(
        f"INSERT INTO {table} (kind, year_built, geom) "
        f"SELECT 'commercial', 2024, ST_Translate(geom, 0, 0.0006) FROM {table} WHERE bid = 30"
    )
    pg.execute(
        f"UPDATE {table} SET kind = CASE WHEN kind = 'commercial' THEN 'residential' "
        "ELSE 'commercial' END WHERE bid = 40"
    )
    pg.execute(f"UPDATE {table} SET year_built = year_built + 1")
    pg.execute(f"VACUUM FULL {table}")
    heap = _heap_order(pg, table)
    assert heap != sorted(heap)  # PostgreSQL's own order is not the key order

    data = read_layers(load_project(root))["buildings"]
    assert list(data.keys) == sorted(heap)  # read in primary-key order
    assert data.bounds[0, 0] < -1e6  # reprojected from EPSG:4326 to the scheme's metres

    ch = detect_changes(load_project(root)).layers["buildings"]
    assert (ch.added, ch.modified, ch.deleted) == expected
    update(load_project(root))

    fresh = tmp_path / "fresh"
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    seed(load_project(fresh))
    tiles = _all_tiles(root)
    assert tiles and tiles == _all_tiles(fresh)


def test_wrong_password_is_one_line_without_the_password(pg, table, county, tmp_path) -> None:
    secret = "not-the-Passw0rd-" + uuid.uuid4().hex[:6]
    (tmp_path / "style.xml").write_text(
        STYLE.format(params=_params(table, password=secret, user="tiledelta"))
    )
    src = load_style(tmp_path / "style.xml").layer("buildings")
    assert src.kind == "postgis"
    with pytest.raises(SourceError) as err:
        read_layer(src, "EPSG:3857")
    msg = str(err.value)
    assert secret not in msg and "\n" not in msg
    assert "cannot connect" in msg and "password" in msg
    assert psycopg.conninfo.conninfo_to_dict(DSN)["dbname"] in msg


def test_missing_key_table_and_field_are_named(pg, table, county, tmp_path) -> None:
    _load(pg, table, county, primary_key=False)
    style = tmp_path / "style.xml"

    def src_for(table_param: str, **extra: str):
        style.write_text(STYLE.format(params=_params(table_param, **extra)))
        return load_style(style).layer("buildings")

    # No primary key and no configured key: heap order is not stable, so refuse.
    with pytest.raises(SourceError, match=r"no primary key.*\[layers\.buildings\] key"):
        read_layer(src_for(table), "EPSG:3857")
    # With [layers.buildings] key set, rows come in key order.
    data = read_layer(src_for(table), "EPSG:3857", key="bid")
    assert list(data.keys) == list(range(1, len(county[0]) + 1))
    assert set(data.attrs) == {"kind"}  # only what the style uses

    # A Mapnik subquery as the table, with the key from the project.
    sub = f"(SELECT bid, kind, geom FROM {table} WHERE kind = 'commercial') AS sub"
    data = read_layer(src_for(sub), "EPSG:3857", key="bid")
    assert 0 < len(data) < len(county[0]) and set(data.attrs["kind"]) == {"commercial"}

    with pytest.raises(SourceError, match="does not exist"):
        read_layer(src_for(table + "_missing"), "EPSG:3857", key="bid")
    with pytest.raises(SourceError, match="key field 'nope'"):
        read_layer(src_for(table), "EPSG:3857", key="nope")
    pg.execute(f"ALTER TABLE {table} RENAME COLUMN kind TO category")
    with pytest.raises(SourceError, match="style uses field.*kind"):
        read_layer(src_for(table), "EPSG:3857", key="bid")
    with pytest.raises(SourceError, match="geometry_field 'shape'"):
        read_layer(src_for(table, geometry_field="shape"), "EPSG:3857", key="bid")


def test_project_key_field_is_used(pg, table, county, tmp_path) -> None:
    """[layers.<name>] key overrides the primary key for matching features."""
    _load(pg, table, county)
    pg.execute(f"ALTER TABLE {table} ADD COLUMN ref text")
    pg.execute(f"UPDATE {table} SET ref = 'r' || lpad(bid::text, 5, '0')")
    (tmp_path / "style.xml").write_text(STYLE.format(params=_params(table)))
    init_project(tmp_path, style=tmp_path / "style.xml", levels="14", force=True)
    project = Project.load(tmp_path)
    project = project.updated(layers={"buildings": LayerConfig(key="ref")})
    project.save()
    data = read_layers(load_project(tmp_path))["buildings"]
    assert list(data.keys) == [f"r{i:05d}" for i in range(1, len(county[0]) + 1)]
