"""MBTiles and XYZ stores on real files; MBTiles is cross-checked with GDAL's driver."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiledelta.errors import CacheError, ConfigError
from tiledelta.grid import LOD, TilingScheme, web_mercator
from tiledelta.stores import MBTilesStore, XYZStore, open_store


def make_image(level: int, row: int, col: int, fmt: str = "PNG") -> bytes:
    a = np.zeros((256, 256, 4), np.uint8)
    a[..., 0] = 20 + level * 50
    a[..., 1] = 10 + row * 40
    a[..., 2] = 10 + col * 40
    a[..., 3] = 255
    img = Image.fromarray(a)
    buf = io.BytesIO()
    (img.convert("RGB") if fmt == "JPEG" else img).save(buf, fmt)
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).transpose(2, 0, 1)


def custom_scheme() -> TilingScheme:
    lods = (LOD(level=0, scale=1e6, resolution=264.58), LOD(level=1, scale=5e5, resolution=132.29))
    return TilingScheme(name="state-plane", crs="EPSG:2913", wkid=2913, origin_x=-1e8,
                        origin_y=1e8, lods=lods)  # fmt: skip


FULL = {(z, r, c): make_image(z, r, c) for z in range(3) for r in range(2**z) for c in range(2**z)}


# ---------------------------------------------------------------------- MBTiles


def test_mbtiles_round_trip_and_tms_rows(tmp_path: Path) -> None:
    path = tmp_path / "cache.mbtiles"
    with open_store("mbtiles", path, web_mercator()) as store:
        assert isinstance(store, MBTilesStore)
        assert store.put_many((*a, d) for a, d in FULL.items()) == len(FULL)
        assert store.put_many([(2, 0, 3, None), (2, 0, 3, None), (1, 1, 1, None)]) == 2
        assert store.get(2, 0, 3) is None
        assert store.count() == {0: 1, 1: 3, 2: 15}
        assert set(store.iter_tiles(2)) == {a for a in FULL if a[0] == 2} - {(2, 0, 3)}
        meta = store.metadata()
    assert meta["format"] == "png" and meta["type"] == "baselayer"
    assert (meta["minzoom"], meta["maxzoom"]) == ("0", "2")
    assert len(meta["bounds"].split(",")) == 4
    assert TilingScheme.model_validate_json(meta["tiledelta_scheme"]).same_grid(web_mercator())

    db = sqlite3.connect(path)
    try:
        # XYZ row 1 at zoom 2 is TMS row 2**2 - 1 - 1 = 2
        (blob,) = db.execute(
            "SELECT tile_data FROM tiles WHERE zoom_level=2 AND tile_column=3 AND tile_row=2"
        ).fetchone()
        assert bytes(blob) == FULL[(2, 1, 3)]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        index = db.execute("PRAGMA index_list(tiles)").fetchall()
        assert any(row[2] == 1 for row in index)  # a unique index
    finally:
        db.close()

    with open_store("mbtiles", path, web_mercator(), create=False) as again:
        assert again.get(2, 1, 3) == FULL[(2, 1, 3)]
        assert again.get_many([(0, 0, 0), (2, 0, 3)]) == {(0, 0, 0): FULL[(0, 0, 0)]}


def test_gdal_mbtiles_driver_reads_flipped_rows(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    path = tmp_path / "world.mbtiles"
    with open_store("mbtiles", path, web_mercator()) as store:
        store.put_many((*a, d) for a, d in FULL.items())
    with rasterio.open(path) as ds:
        assert ds.driver == "MBTiles"
        assert (ds.width, ds.height, ds.count) == (1024, 1024, 4)
        assert ds.crs.to_epsg() == 3857
        for row, col in [(0, 1), (3, 0), (2, 3)]:
            win = ((row * 256, row * 256 + 256), (col * 256, col * 256 + 256))
            assert np.array_equal(ds.read(window=win), pixels(FULL[(2, row, col)]))


def test_mbtiles_jpeg_metadata_and_refusals(tmp_path: Path) -> None:
    with open_store("mbtiles", tmp_path / "j.mbtiles", web_mercator(), fmt="jpeg") as store:
        assert store.metadata()["format"] == "jpg"
    with pytest.raises(CacheError, match="Web Mercator.*--cache compact for state-plane"):
        open_store("mbtiles", tmp_path / "sp.mbtiles", custom_scheme())
    with pytest.raises(CacheError, match="does not exist"):
        open_store("mbtiles", tmp_path / "none.mbtiles", web_mercator(), create=False)
    (tmp_path / "junk.mbtiles").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CacheError, match="choose another --cache path"):
        open_store("mbtiles", tmp_path / "junk.mbtiles", web_mercator())
    # a tiledelta_scheme of another grid is refused
    path = tmp_path / "other.mbtiles"
    open_store("mbtiles", path, web_mercator()).close()
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "UPDATE metadata SET value=? WHERE name='tiledelta_scheme'",
            (custom_scheme().model_dump_json(),),
        )
    db.close()
    with pytest.raises(CacheError, match="different tiling scheme") as err:
        open_store("mbtiles", path, web_mercator())
    assert str(path) in str(err.value) and "delete" in str(err.value)


def test_mbtiles_failed_transaction_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store("mbtiles", tmp_path / "t.mbtiles", web_mercator()) as store:
        store.put_many([(1, 0, 0, FULL[(1, 0, 0)])])
        with pytest.raises(CacheError, match="outside"):
            store.put_many([(1, 0, 1, FULL[(1, 0, 1)]), (1, 5, 0, b"x")])

        def boom(db: sqlite3.Connection) -> None:
            raise RuntimeError("crash inside the transaction")

        monkeypatch.setattr(MBTilesStore, "_update_zoom_range", staticmethod(boom))
        with pytest.raises(RuntimeError):
            store.put_many([(1, 0, 1, FULL[(1, 0, 1)]), (1, 0, 0, None)])
        monkeypatch.undo()
        assert store.count() == {1: 1}
        assert store.get(1, 0, 0) == FULL[(1, 0, 0)]


# -------------------------------------------------------------------------- XYZ


def test_xyz_writes_plain_files(tmp_path: Path) -> None:
    root = tmp_path / "xyz"
    with open_store("xyz", root, web_mercator()) as store:
        assert isinstance(store, XYZStore)
        assert store.put_many((*a, d) for a, d in FULL.items()) == len(FULL)
        assert store.put_many([(2, 1, 3, None), (2, 1, 3, None)]) == 1
    f = root / "2" / "3" / "0.png"  # z / x=col / y=row
    assert f.read_bytes() == FULL[(2, 0, 3)]
    assert Image.open(f).size == (256, 256)
    assert not (root / "2" / "3" / "1.png").exists()
    marker = json.loads((root / "tiledelta.json").read_text())
    assert marker["kind"] == "xyz" and marker["format"] == "png"
    assert not [p for p in root.rglob("*.tmp")]
    store = XYZStore(root, web_mercator(), create=False)
    assert store.count() == {0: 1, 1: 4, 2: 15}
    assert set(store.iter_tiles()) == set(FULL) - {(2, 1, 3)}
    assert store.get(1, 1, 0) == FULL[(1, 1, 0)]
    assert store.get(2, 1, 3) is None


def test_xyz_jpeg_and_mixed_extensions(tmp_path: Path) -> None:
    jpg = make_image(1, 0, 0, "JPEG")
    png = make_image(1, 0, 1)
    with open_store("xyz", tmp_path / "j", web_mercator(), fmt="jpeg") as store:
        store.put_many([(1, 0, 0, jpg)])
    assert (tmp_path / "j" / "1" / "0" / "0.jpg").read_bytes() == jpg
    with open_store("xyz", tmp_path / "m", web_mercator(), fmt="mixed") as store:
        store.put_many([(1, 0, 0, jpg), (1, 0, 1, png)])
        assert (tmp_path / "m" / "1" / "0" / "0.jpg").is_file()
        assert (tmp_path / "m" / "1" / "1" / "0.png").is_file()
        # a tile that changes type does not leave the old file behind
        store.put_many([(1, 0, 0, png)])
        assert not (tmp_path / "m" / "1" / "0" / "0.jpg").exists()
        assert store.get(1, 0, 0) == png
        assert sorted(store.iter_tiles()) == [(1, 0, 0), (1, 0, 1)]
        with pytest.raises(CacheError, match="neither PNG nor JPEG"):
            store.put_many([(1, 1, 1, b"GIF89a....")])


def test_xyz_scheme_checks(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="Web Mercator"):
        open_store("xyz", tmp_path / "sp", custom_scheme())
    root = tmp_path / "x"
    open_store("xyz", root, web_mercator()).close()
    marker = root / "tiledelta.json"
    info = json.loads(marker.read_text())
    info["scheme"] = custom_scheme().model_dump(mode="json")
    marker.write_text(json.dumps(info))
    with pytest.raises(CacheError, match="different tiling scheme") as err:
        open_store("xyz", root, web_mercator())
    assert str(root) in str(err.value) and "--cache" in str(err.value)
    open_store("compact", tmp_path / "c", web_mercator()).close()
    with pytest.raises(CacheError, match="compact cache"):
        open_store("xyz", tmp_path / "c", web_mercator())
    with pytest.raises(CacheError, match="no tiledelta.json"):
        open_store("xyz", tmp_path / "new", web_mercator(), create=False)


def test_open_store_rejects_unknown_kind_and_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cache kind"):
        open_store("tms", tmp_path / "t", web_mercator())
    with pytest.raises(ConfigError, match="tile format"):
        open_store("xyz", tmp_path / "t", web_mercator(), fmt="webp")
