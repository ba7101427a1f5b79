"""Reports and notifications read the summary's kind: server runs, baselines, failures,
and run folders from before summaries had one."""

from tiledelta.config import NotifyConfig
from tiledelta.runs.notify import wanted
from tiledelta.runs.report import parse_summary, render_html, run_kind, summary_text

SERVER = {
    "kind": "arcgis",
    "target": "arcgis",
    "run": 2,
    "levels": {"13": {"scale": 72223.8, "submitted": True}, "14": {"scale": 36111.9}},
    "jobs": [{"job": "j1", "level": 13, "scale": 72223.8, "status": "esriJobSucceeded"}],
    "tiles_rendered": 0,
    "tiles_written": 0,
    "seconds": 3.0,
}


def test_server_runs_say_jobs_not_tiles():
    text = summary_text(SERVER)
    assert "1 server job(s)" in text and "rendered" not in text
    assert "13: j1 (esriJobSucceeded)" in text
    page = render_html(SERVER, map_src=None)
    assert "Server jobs per level" in page and "tiles written" not in page
    assert "1:72,224" in page


def test_per_level_words_and_count_order():
    base = {
        "levels": {"13": {"tiles": 5}},
        "tiles_rendered": 9,
        "tiles_written": 5,
        "tiles_unchanged": 1,
        "tiles_blank": 3,
        "tiles_removed": 2,
    }
    seed = summary_text({**base, "kind": "seed"})
    assert "tiles: 9 rendered, 5 written, 1 unchanged, 3 blank, 2 removed" in seed
    assert "stored tiles per level: 13: 5" in seed
    update = summary_text(
        {**base, "kind": "update", "changes": {"layers": {}}}, tiles={"levels": {"13": [[0, 0]]}}
    )
    assert "planned tiles per level: 13: 5 (1 changed in the cache)" in update
    assert "planned tiles" in render_html({**base, "kind": "update"})
    # Newer summaries: the same counts per level for a seed and an update.
    level = {"tiles": 9, "rendered": 9, "written": 5, "unchanged": 1, "blank": 3, "removed": 2}
    new = {**base, "levels": {"13": {**level, "blank_stored": 0}}}
    for kind in ("seed", "update"):
        text = summary_text({**new, "kind": kind, "changes": {"layers": {}}})
        assert "per level (rendered / written / unchanged / blank / removed): 13: 9/5/1/3/2" in (
            text
        )
        page = render_html({**new, "kind": kind})
        assert '<tr data-level="13"><td>13</td><td class="n">9</td><td class="n">5</td>' in page


def test_failures_and_old_summaries():
    assert run_kind({"kind": "watch", "error": "x"}) == "watch"
    assert parse_summary({"kind": "watch", "error": "x"}) is None
    assert summary_text({"kind": "arcgis", "error": "ArcGISError: busy"}).splitlines() == [
        "tiledelta arcgis FAILED",
        "  error: ArcGISError: busy",
    ]
    # before summaries had a kind
    assert run_kind({"changes": {}}) == "update"
    assert run_kind({"rebuild": "no build yet"}) == "rebuild"
    assert run_kind({}) == "seed"
    old = parse_summary({"tiles_written": 3, "stages": "not a dict", "watch_seconds": 1})
    assert old is not None and old.kind == "seed" and old.tiles_written == 3 and old.stages == {}


def test_server_runs_with_jobs_are_worth_a_message():
    cfg = NotifyConfig(on="always")
    assert wanted(cfg, SERVER, ok=True)
    assert not wanted(cfg, {**SERVER, "jobs": []}, ok=True)
    assert not wanted(cfg, {"kind": "arcgis-baseline", "jobs": []}, ok=True)
