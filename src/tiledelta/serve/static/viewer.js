// tiledelta serve: the cache on a Leaflet map, with the last run's changes drawn over it.
// Everything comes from this server (no CDN): service.json, runs/latest/*, tiles/, vendor/.
(function () {
  "use strict";

  var COLORS = { new: "#0570b0", old: "#d7301f", tile: "#ff7f00" };
  var state = { ready: false, error: null };
  window.tiledelta = state;

  function notice(html) {
    var el = document.getElementById("notice");
    el.innerHTML = el.hidden ? html : el.innerHTML + "<br>" + html;
    el.hidden = false;
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return "&#" + c.charCodeAt(0) + ";";
    });
  }

  if (typeof L === "undefined") {
    notice(
      "<b>Leaflet is not installed</b>, so the map cannot be drawn. Run " +
        "<code>npm install</code> in the tiledelta repository (it reads " +
        "<code>package.json</code> and fills <code>node_modules/leaflet</code>), then reload. " +
        'The tile URLs are in <a href="service.json">service.json</a>.'
    );
    state.error = "leaflet-missing";
    return;
  }

  // JSON from this server; null on 404 (no run yet), an Error otherwise.
  function getJSON(url, optional) {
    return fetch(url, { cache: "no-cache" }).then(function (r) {
      if (r.ok) return r.json();
      return r
        .json()
        .catch(function () { return {}; })
        .then(function (body) {
          var msg = (body.error && body.error.message) || r.status + " " + r.statusText;
          if (optional && r.status === 404) return { missing: msg };
          throw new Error(url + ": " + msg);
        });
    });
  }

  // Web Mercator tile (z, row, col) -> Leaflet bounds.
  function tileBounds(z, row, col) {
    var n = Math.pow(2, z);
    var lat = function (y) {
      return (Math.atan(Math.sinh(Math.PI * (1 - (2 * y) / n))) * 180) / Math.PI;
    };
    return L.latLngBounds([lat(row + 1), (col / n) * 360 - 180], [lat(row), ((col + 1) / n) * 360 - 180]);
  }

  function legend(run, nChanges, withTiles, withSwipe) {
    var ctl = L.control({ position: "topright" });
    ctl.onAdd = function () {
      var div = L.DomUtil.create("div", "legend");
      div.innerHTML =
        "<h4>" + esc(run) + "</h4>" +
        '<div><i class="sw-new"></i>new or modified feature (now)</div>' +
        '<div><i class="sw-old"></i>deleted or modified feature (old box)</div>' +
        (withTiles ? '<div><i class="sw-tile"></i>tile changed in the cache at this level (written, blank copy stored or removed)</div>' : "") +
        '<p id="counts"></p>' +
        '<p id="run-counts">' + esc(runCounts(state.summary)) + "</p>";
      if (nChanges) {
        var b = L.DomUtil.create("button", "", div);
        b.type = "button";
        b.textContent = "Zoom to changes";
        L.DomEvent.on(b, "click", function (e) {
          L.DomEvent.stop(e);
          state.map.fitBounds(state.changes.getBounds(), { padding: [30, 30] });
        });
      }
      if (withSwipe) {
        var t = L.DomUtil.create("button", "td-swipe-toggle", div);
        t.type = "button";
        t.textContent = "Before / after";
        t.title = "Compare the tiles before the last run (left) with now (right)";
        t.setAttribute("aria-pressed", "false");
        L.DomEvent.on(t, "click", function (e) {
          L.DomEvent.stop(e);
          t.setAttribute("aria-pressed", String(state.swipe.toggle()));
        });
      }
      L.DomEvent.disableClickPropagation(div);
      return div;
    };
    return ctl;
  }

  // Before/after swipe: the tiles as they were before the last run (runs/latest/before/...,
  // in their own pane) left of a draggable divider, the current tiles right of it. Both
  // panes are clipped with CSS `clip` in layer coordinates, recomputed on every move, zoom
  // and resize (panning shifts the panes, so a fixed clip would drift with the map).
  function swipe(map, options) {
    var beforePane = map.createPane("tdBefore");
    beforePane.style.zIndex = 250; // above the current tiles (200), below the overlays
    var afterPane = map.getPane("tilePane");
    var layer = L.tileLayer("runs/latest/before/{z}/{x}/{y}." + options.ext, {
      pane: "tdBefore",
      minZoom: options.minZoom,
      maxZoom: options.maxZoom,
      bounds: options.bounds,
    });
    var s = { on: false, ratio: 0.5, x: null, layer: layer };

    var bar = L.DomUtil.create("div", "td-swipe", map.getContainer());
    bar.hidden = true;
    bar.innerHTML =
      '<span class="td-swipe-label td-swipe-before">before</span>' +
      '<span class="td-swipe-label td-swipe-after">after</span>';
    var handle = L.DomUtil.create("div", "td-swipe-handle", bar);
    handle.tabIndex = 0;
    handle.setAttribute("role", "slider");
    handle.setAttribute("aria-label", "Before / after divider");
    handle.title = "Drag: before on the left, after on the right";
    L.DomEvent.disableClickPropagation(bar);
    L.DomEvent.disableScrollPropagation(bar);

    function clip() {
      if (!s.on) return;
      var size = map.getSize();
      s.x = Math.round(Math.max(0, Math.min(1, s.ratio)) * size.x);
      var nw = map.containerPointToLayerPoint([0, 0]);
      var se = map.containerPointToLayerPoint(size);
      var mid = nw.x + s.x;
      beforePane.style.clip = "rect(" + [nw.y, mid, se.y, nw.x].join("px, ") + "px)";
      afterPane.style.clip = "rect(" + [nw.y, se.x, se.y, mid].join("px, ") + "px)";
      bar.style.left = s.x + "px";
      // a label that would not fit between the divider and the map's edge is hidden
      L.DomUtil[s.x < 90 ? "addClass" : "removeClass"](bar, "td-swipe-at-left");
      L.DomUtil[size.x - s.x < 90 ? "addClass" : "removeClass"](bar, "td-swipe-at-right");
      handle.setAttribute("aria-valuenow", Math.round(s.ratio * 100));
    }

    function moveTo(clientX) {
      var box = map.getContainer().getBoundingClientRect();
      s.ratio = box.width ? (clientX - box.left) / box.width : 0.5;
      clip();
    }

    L.DomEvent.on(handle, "pointerdown", function (e) {
      L.DomEvent.stop(e);
      handle.setPointerCapture(e.pointerId);
      L.DomUtil.addClass(bar, "td-swipe-dragging");
    });
    L.DomEvent.on(handle, "pointermove", function (e) {
      if (handle.hasPointerCapture(e.pointerId)) moveTo(e.clientX);
    });
    L.DomEvent.on(handle, "pointerup pointercancel", function (e) {
      if (handle.hasPointerCapture(e.pointerId)) handle.releasePointerCapture(e.pointerId);
      L.DomUtil.removeClass(bar, "td-swipe-dragging");
    });
    L.DomEvent.on(handle, "keydown", function (e) {
      var step = { ArrowLeft: -0.05, ArrowRight: 0.05 }[e.key];
      if (!step) return;
      L.DomEvent.stop(e); // the map would pan on arrow keys
      s.ratio = Math.max(0, Math.min(1, s.ratio + step));
      clip();
    });
    map.on("move zoom zoomend viewreset resize", clip);

    s.setRatio = function (r) { s.ratio = r; clip(); };
    s.toggle = function (on) {
      s.on = on === undefined ? !s.on : !!on;
      bar.hidden = !s.on;
      if (s.on) {
        layer.addTo(map);
        clip();
      } else {
        map.removeLayer(layer);
        beforePane.style.clip = afterPane.style.clip = "";
        s.x = null;
      }
      return s.on;
    };
    return s;
  }

  // The run's tile counts in the words of the CLI, the report and --json
  // (rendered = written + unchanged + blank; removed and blank copies stored apart).
  var COUNT_WORDS = [
    ["tiles_rendered", "rendered"],
    ["tiles_written", "written"],
    ["tiles_unchanged", "unchanged"],
    ["tiles_blank", "blank"],
    ["tiles_removed", "removed"],
    ["tiles_blank_stored", "blank copies stored"],
  ];
  function runCounts(summary) {
    if (!summary || summary.missing || summary.tiles_rendered == null) return "";
    return "Tiles: " + COUNT_WORDS.filter(function (cw) {
      return cw[0] !== "tiles_blank_stored" || summary[cw[0]];
    }).map(function (cw) {
      return Number(summary[cw[0]] || 0).toLocaleString("en-US") + " " + cw[1];
    }).join(", ");
  }

  function start(svc, changes, tiles, summary, before) {
    state.summary = summary;
    document.title = svc.name + " \u2013 tiledelta";
    document.getElementById("name").textContent = svc.name;
    var levels = svc.levels.slice().sort(function (a, b) { return a - b; });
    var minZ = levels[0], maxZ = levels[levels.length - 1];
    document.getElementById("info").textContent =
      svc.cache_kind + " cache \u00b7 " + svc.scheme + " \u00b7 levels " + minZ + "\u2013" + maxZ;

    var e = svc.extent_wgs84; // [west, south, east, north]
    var extent = L.latLngBounds([e[1], e[0]], [e[3], e[2]]);
    var map = L.map("map", { zoomControl: true });
    state.map = map;
    L.control.scale().addTo(map);
    map.createPane("tdTiles").style.zIndex = 410;
    map.createPane("tdChanges").style.zIndex = 420;

    var overlays = {};
    if (svc.web_mercator) {
      map.setMinZoom(minZ);
      map.setMaxZoom(maxZ);
      var ext = svc.format === "jpeg" ? "jpg" : "png";
      state.cache = L.tileLayer("tiles/{z}/{x}/{y}." + ext, {
        minZoom: minZ,
        maxZoom: maxZ,
        bounds: extent,
        attribution: "tiledelta cache",
      }).addTo(map);
      // Offered after an update that kept the tiles it replaced (before.json answers).
      if (before && !before.missing && before.tiles > 0) {
        state.swipe = swipe(map, { ext: ext, minZoom: minZ, maxZoom: maxZ, bounds: extent });
        if (!before.complete) {
          notice("The last run kept only part of the tiles it replaced (its before.sqlite " +
            "is capped): the \u201cbefore\u201d side lacks some changed tiles.");
        }
      }
    } else {
      notice(
        "This cache uses the <b>" + esc(svc.scheme) + "</b> tiling scheme; the browser viewer " +
          "draws Web Mercator caches only. Add the ArcGIS REST service (<code>" +
          esc(svc.urls.arcgis) + "</code>) or the WMTS capabilities (<code>" + esc(svc.urls.wmts) +
          "</code>) to QGIS or ArcGIS Pro." +
          (changes.features ? " The last run's changes are drawn below, without the tiles." : "")
      );
    }

    var feats = changes.features || [];
    var nChanges = feats.length;
    var nOld = feats.filter(function (f) { return f.properties.change === "old"; }).length;
    var nNew = nChanges - nOld;
    if (changes.missing) notice("No changes to draw: " + esc(changes.missing) + ".");
    state.changes = L.geoJSON(changes.features ? changes : null, {
      pane: "tdChanges",
      style: function (f) {
        var old = f.properties.change === "old";
        var area = /Polygon/.test(f.geometry.type);
        return {
          pane: "tdChanges",
          className: "td-change td-change-" + (old ? "old" : "new"),
          color: old ? COLORS.old : COLORS.new,
          weight: old ? 2 : 2.5,
          dashArray: old ? "6 4" : null,
          fill: area,
          fillOpacity: old ? 0.08 : 0.15,
        };
      },
      pointToLayer: function (f, latlng) {
        return L.circleMarker(latlng, { radius: 6 });
      },
      onEachFeature: function (f, layer) {
        var p = f.properties;
        layer.bindTooltip(esc(p.layer) + ": " + (p.change === "old" ? "where it was (box)" : "now"));
      },
    }).addTo(map);
    overlays["Changed features"] = state.changes;

    state.tileOutlines = L.layerGroup().addTo(map);
    var perLevel = (svc.web_mercator && tiles.levels) || {};
    var total = 0;
    Object.keys(perLevel).forEach(function (k) { total += perLevel[k].length; });
    if (svc.web_mercator) overlays["Changed tiles"] = state.tileOutlines;

    function drawTiles() {
      var z = map.getZoom();
      var list = perLevel[String(z)] || [];
      state.tileOutlines.clearLayers();
      list.forEach(function (rc) {
        L.rectangle(tileBounds(z, rc[0], rc[1]), {
          pane: "tdTiles",
          className: "td-tile",
          color: COLORS.tile,
          weight: 1.5,
          fillOpacity: 0.06,
          interactive: false,
        }).addTo(state.tileOutlines);
      });
      state.tileLevel = z;
      var counts = document.getElementById("counts");
      if (!counts) return;
      if (changes.missing) {
        counts.textContent = "No changes recorded by this run.";
        return;
      }
      counts.textContent =
        nNew + " new geometr" + (nNew === 1 ? "y" : "ies") + ", " + nOld + " old box" +
        (nOld === 1 ? "" : "es") +
        (svc.web_mercator
          ? "; " + list.length + " of " + total + " tiles changed in the cache are at level " + z + "."
          : ".");
    }

    var run = summary && summary.run != null ? "Last run #" + summary.run : "Last run";
    L.control.layers(null, overlays, { collapsed: false }).addTo(map);
    legend(run, nChanges, svc.web_mercator, !!state.swipe).addTo(map);
    map.on("zoomend", drawTiles);
    if (svc.web_mercator || !nChanges) map.fitBounds(extent);
    else map.fitBounds(state.changes.getBounds(), { padding: [30, 30] });
    drawTiles();
    state.ready = true;
  }

  // A run that changed tiles: an update (or a rebuild), not a seed.
  function isUpdate(summary) {
    if (!summary || summary.missing) return false;
    if (summary.kind) return /^(update|rebuild)$/.test(summary.kind);
    return "changes" in summary;
  }

  Promise.all([
    getJSON("service.json"),
    getJSON("runs/latest/changes.geojson", true),
    getJSON("runs/latest/tiles.json", true),
    getJSON("runs/latest/summary.json", true),
  ])
    .then(function (r) {
      // The before tiles are only asked about after an update of a Web Mercator cache.
      var before = r[0].web_mercator && isUpdate(r[3])
        ? getJSON("runs/latest/before.json", true)
        : null;
      return Promise.resolve(before).then(function (b) { start(r[0], r[1], r[2], r[3], b); });
    })
    .catch(function (err) {
      state.error = String(err);
      notice("The viewer could not start: " + esc(err.message || err));
      console.error(err);
    });
})();
