"""Editing an ArcGIS sharing draft (``.sddraft``) for a cached overwrite, byte for byte.

A sharing draft is the ``SVCManifest`` XML that ``exportToSDDraft`` writes. Its
``xsi:type`` *values* name types through prefixes (``typens:``, ``xs:``) that only the
root declares, so a rewrite with ElementTree, which keeps only the prefixes it sees in
element and attribute *names*, leaves those values unbound and the draft corrupt.

This module never re-serialises the document. It scans the original text for element
spans and splices new text into the few values it means to change; every other byte,
namespace declaration, quote style and whitespace stays as it was. The result is
checked with a namespace-aware parser before it is written.

What :func:`edit_for_cached_overwrite` sets (Esri: properties left unset fall back to
their defaults, even on overwrite, so each is declared):

- the top-level ``<KeepExistingMapCache>`` of ``SVCManifest``: ``true`` (added after
  ``KeepExistingData`` when a draft lacks it, since the server's default is ``false``);
- in ``Configurations/SVCConfiguration/Definition/ConfigurationProperties`` (the map
  service's configuration): ``isCached`` ``true`` and ``cacheOnDemand`` ``false``
  (tiledelta drives the cache), added as ``PropertySetProperty`` entries in the draft's
  own layout when missing (an empty ``<PropertyArray/>`` is opened);
- with a tiling scheme, the top-level ``CacheSchema`` (a ``typens:CacheInfo``, as in
  ArcGIS drafts): the scheme's ``TileCacheInfo``, ``TileImageInfo`` and
  ``CacheStorageInfo`` (as in the cache's ``conf.xml``), with the draft's own prefixes.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tiledelta.errors import TileDeltaError
from tiledelta.grid import TilingScheme, scheme_to_conf_xml

XSI = "http://www.w3.org/2001/XMLSchema-instance"
XS = "http://www.w3.org/2001/XMLSchema"
XMLNS = "http://www.w3.org/XML/1998/namespace"

#: Configuration properties a cached overwrite declares, in the order they are added.
CACHE_PROPERTIES = (("isCached", "true"), ("cacheOnDemand", "false"))


class SDDraftError(TileDeltaError):
    """The sharing draft is not a well-formed, namespace-correct ``SVCManifest``."""


@dataclass
class Node:
    """One element of the draft, with character offsets into the original text."""

    name: str  # qualified name as written, e.g. "Value" or "typens:Foo"
    start: int  # offset of "<"
    open_end: int  # offset just after the start tag's ">"
    close_start: int = -1  # offset of "</" (== open_end for an empty element)
    end: int = -1  # offset just after the end tag's ">"
    self_closing: bool = False
    attrs: dict[str, str] = field(default_factory=dict)
    ns: dict[str, str] = field(default_factory=dict)  # prefixes in scope ("" = default)
    parent: Node | None = field(default=None, repr=False)
    children: list[Node] = field(default_factory=list, repr=False)

    @property
    def local(self) -> str:
        return self.name.rpartition(":")[2]

    def child(self, local: str) -> Node | None:
        return next((c for c in self.children if c.local == local), None)

    def text(self, src: str) -> str:
        """The element's character content (no markup expected inside)."""
        return "" if self.self_closing else src[self.open_end : self.close_start]


_TOKEN = re.compile(
    r"<!--.*?-->|<\?.*?\?>|<!\[CDATA\[.*?\]\]>|<!DOCTYPE[^>]*>"
    r"|</(?P<close>[^\s>]+)\s*>"
    r"|<(?P<open>[^\s/>!?]+)(?P<attrs>(?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(?P<slash>/?)>",
    re.S,
)
_ATTR = re.compile(r"([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


def scan(src: str) -> Node:
    """The element tree of ``src`` with offsets; raises :class:`SDDraftError` on bad markup."""
    root: Node | None = None
    stack: list[Node] = []
    pos = 0
    for m in _TOKEN.finditer(src):
        between = src[pos : m.start()]
        if "<" in between:
            raise SDDraftError(f"malformed markup near character {pos + between.index('<')}")
        pos = m.end()
        if m.group("close"):
            if not stack or stack[-1].name != m.group("close"):
                raise SDDraftError(f"unexpected </{m.group('close')}> at character {m.start()}")
            node = stack.pop()
            node.close_start, node.end = m.start(), m.end()
            continue
        if not m.group("open"):
            continue  # comment, processing instruction, CDATA, doctype
        attrs = {
            a.group(1): a.group(2) if a.group(2) is not None else a.group(3) or ""
            for a in _ATTR.finditer(m.group("attrs"))
        }
        ns = dict(stack[-1].ns) if stack else {"xml": XMLNS}
        for k, v in attrs.items():
            if k == "xmlns":
                ns[""] = v
            elif k.startswith("xmlns:"):
                ns[k[6:]] = v
        node = Node(m.group("open"), m.start(), m.end(), attrs=attrs, ns=ns)
        if stack:
            node.parent = stack[-1]
            stack[-1].children.append(node)
        elif root is None:
            root = node
        else:
            raise SDDraftError("more than one root element")
        if m.group("slash"):
            node.self_closing = True
            node.close_start, node.end = m.end(), m.end()
        else:
            stack.append(node)
    if "<" in src[pos:]:
        raise SDDraftError(f"malformed markup near character {pos + src[pos:].index('<')}")
    if stack:
        raise SDDraftError(f"<{stack[-1].name}> is never closed")
    if root is None:
        raise SDDraftError("no root element")
    return root


def _walk(node: Node):
    yield node
    for c in node.children:
        yield from _walk(c)


def check_namespaces(root: Node) -> None:
    """Every prefix used in a name or an ``xsi:type`` value must be declared in scope."""
    for node in _walk(root):
        names = [node.name] + [a for a in node.attrs if not a.startswith("xmlns")]
        for qname in names:
            prefix = qname.partition(":")[0] if ":" in qname else None
            if prefix and prefix not in node.ns:
                raise SDDraftError(f"<{node.name}>: the prefix {prefix!r} is not declared")
        for attr, value in node.attrs.items():
            pre, _, local = attr.rpartition(":")
            if local == "type" and pre and node.ns.get(pre) == XSI and ":" in value:
                vpre = value.partition(":")[0]
                if vpre not in node.ns:
                    raise SDDraftError(
                        f"<{node.name} {attr}={value!r}>: the prefix {vpre!r} is not declared "
                        "(was the draft rewritten by a tool that drops namespace declarations?)"
                    )


def parse_check(data: bytes) -> ET.Element:
    """Parse ``data`` with a namespace-aware parser and check the ``xsi:type`` prefixes."""
    try:
        tree = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SDDraftError(f"not well-formed XML: {exc}") from None
    if tree.tag.rpartition("}")[2] != "SVCManifest":
        raise SDDraftError(f"the root element is <{tree.tag}>, not <SVCManifest>")
    check_namespaces(scan(_decode(data)))
    return tree


def _codec(data: bytes) -> str:
    """The draft's encoding: UTF-16 by its byte-order mark, else UTF-8 (as Pro writes)."""
    if data.startswith(b"\xff\xfe"):
        return "utf-16-le"
    if data.startswith(b"\xfe\xff"):
        return "utf-16-be"
    return "utf-8"


def _decode(data: bytes) -> str:
    # The byte-order mark stays in the text as U+FEFF, so encoding gives it back.
    return data.decode(_codec(data), "surrogateescape" if _codec(data) == "utf-8" else "strict")


def _encode(text: str, codec: str = "utf-8") -> bytes:
    return text.encode(codec, "surrogateescape" if codec == "utf-8" else "strict")


def _prefix(node: Node, uri: str, what: str) -> str:
    for p, u in node.ns.items():
        if u == uri and p:
            return p
    raise SDDraftError(f"the draft declares no prefix for {what} ({uri})")


def service_configuration(src: str, root: Node) -> Node | None:
    """The ``SVCConfiguration`` of the service: under ``Configurations`` (as ArcGIS writes
    drafts), else directly under the root; the MapServer one when there are several."""
    holders = [root.child("Configurations"), root]
    found = [
        c for h in holders if h is not None for c in h.children if c.local == "SVCConfiguration"
    ]

    def type_name(config: Node) -> str | None:
        node = config.child("TypeName")
        return node.text(src).strip() if node is not None else None

    return next((c for c in found if type_name(c) == "MapServer"), found[0] if found else None)


def _path(root: Node, *names: str) -> Node | None:
    node: Node | None = root
    for n in names:
        node = node.child(n) if node is not None else None
    return node


def _quote(src: str, root: Node) -> str:
    m = re.search(r"""\s[^\s=]+\s*=\s*(["'])""", src[root.start : root.open_end])
    return m.group(1) if m else '"'


def _indent_of(src: str, node: Node) -> str:
    line_start = src.rfind("\n", 0, node.start) + 1
    lead = src[line_start : node.start]
    return lead if lead.strip() == "" and "\n" in src[: node.start] else ""


def _opened(src: str, node: Node) -> str:
    """The start tag of a self-closing element, written as an opening tag."""
    tag = src[node.start : node.end]
    return tag[: len(tag.rstrip(">").rstrip().rstrip("/").rstrip())] + ">"


@dataclass
class Edit:
    start: int
    end: int
    text: str
    what: str


def _set_text(src: str, node: Node, value: str, what: str) -> Edit | None:
    if node.children:
        raise SDDraftError(f"<{node.name}> ({what}) holds elements, not a value")
    if not node.self_closing and node.text(src).strip() == value:
        return None
    if node.self_closing:  # <X/> -> <X>value</X>
        return Edit(node.start, node.end, f"{_opened(src, node)}{value}</{node.name}>", what)
    return Edit(node.open_end, node.close_start, value, what)


def edit_for_cached_overwrite(
    data: bytes,
    *,
    scheme: TilingScheme | None = None,
    tile_format: str = "png",
    quality: int = 75,
) -> tuple[bytes, list[str]]:
    """``data`` edited for an overwrite that keeps (and declares) the map cache.

    Returns the new bytes and one line per change. Untouched bytes are kept as they were.
    Raises :class:`SDDraftError` when the draft is not a namespace-correct ``SVCManifest``.
    """
    parse_check(data)
    src = _decode(data)
    root = scan(src)
    q = _quote(src, root)
    edits: list[Edit | None] = []

    keep = root.child("KeepExistingMapCache")
    if keep is None:
        edits.append(_add_keep_existing_map_cache(src, root))
    else:
        edits.append(_set_text(src, keep, "true", "KeepExistingMapCache = true"))

    config = service_configuration(src, root)
    definition = config.child("Definition") if config is not None else None
    props_node = definition.child("ConfigurationProperties") if definition is not None else None
    if props_node is None:  # as Esri's samples: the first ConfigurationProperties anywhere
        props_node = next((n for n in _walk(root) if n.local == "ConfigurationProperties"), None)
    if props_node is None:
        raise SDDraftError(
            "no <Configurations><SVCConfiguration><Definition><ConfigurationProperties> "
            "in the draft"
        )
    array = props_node.child("PropertyArray")
    if array is None:
        raise SDDraftError("no <ConfigurationProperties><PropertyArray> in the draft")
    props: dict[str, Node] = {}
    for prop in array.children:
        key_node = prop.child("Key")
        if key_node is not None:
            props[key_node.text(src).strip()] = prop
    missing: list[tuple[str, str]] = []
    for key, value in CACHE_PROPERTIES:
        found = props.get(key)
        if found is None:
            missing.append((key, value))
            continue
        val = found.child("Value")
        if val is None:
            raise SDDraftError(f"the configuration property {key} has no <Value>")
        edits.append(_set_text(src, val, value, f"{key} = {value}"))
    if missing:
        xsi = _prefix(root, XSI, "XMLSchema-instance")
        xs = next((p for p, u in array.ns.items() if u == XS and p), None)
        xs_decl = ""
        if xs is None:  # never used so far in this draft: declare it on the new values
            xs, xs_decl = "xs", f" xmlns:xs={q}{XS}{q}"
        sample = array.children[0] if array.children else None
        typ = sample.attrs.get(f"{xsi}:type") if sample is not None else None
        ptype = typ or f"{_typens(root)}:PropertySetProperty"
        inner_sep, outer_sep = _separators(src, array, sample)
        text = "".join(
            f"{outer_sep}<PropertySetProperty {xsi}:type={q}{ptype}{q}>{inner_sep}"
            f"<Key>{k}</Key>{inner_sep}<Value{xs_decl} {xsi}:type={q}{xs}:string{q}>{v}</Value>"
            f"{outer_sep}</PropertySetProperty>"
            for k, v in missing
        )
        what = "added " + ", ".join(f"{k} = {v}" for k, v in missing)
        if array.self_closing:  # <PropertyArray .../> -> <PropertyArray ...>...</PropertyArray>
            opened = _opened(src, array)
            edits.append(Edit(array.start, array.end, f"{opened}{text}</{array.name}>", what))
        else:
            pos = array.children[-1].end if array.children else array.open_end
            edits.append(Edit(pos, pos, text, what))

    if scheme is not None:
        edits.append(_cache_schema_edit(src, root, scheme, tile_format, quality, q))

    done = [e for e in edits if e is not None]
    done.sort(key=lambda e: e.start, reverse=True)
    out = src
    for e in done:
        out = out[: e.start] + e.text + out[e.end :]
    result = _encode(out, _codec(data))
    parse_check(result)
    return result, [e.what for e in sorted(done, key=lambda e: e.start)]


#: Top-level elements after which a missing ``KeepExistingMapCache`` goes, best first
#: (ArcGIS writes it right after ``KeepExistingData``).
_KEEP_ANCHORS = ("KeepExistingData", "ByReference", "ServerType", "State", "Type", "Name")


def _add_keep_existing_map_cache(src: str, root: Node) -> Edit:
    """Insert ``<KeepExistingMapCache>true</KeepExistingMapCache>`` at the top level, after
    its usual neighbour, in the draft's own layout (a draft may lack it, and the server
    then falls back to the default, ``false``: the cache would be dropped)."""
    anchor = next((a for n in _KEEP_ANCHORS if (a := root.child(n)) is not None), None)
    first = root.children[0] if root.children else None
    if anchor is not None:
        siblings = root.children
        i = siblings.index(anchor)
        before = siblings[i - 1].end if i > 0 else root.open_end
        pos = anchor.end
    else:
        before, pos = root.open_end, root.open_end
    element = "<KeepExistingMapCache>true</KeepExistingMapCache>"
    if anchor is None and first is not None:
        sep = _blank(src[root.open_end : first.start])
        text, pos = element + sep, first.start
    else:
        sep = _blank(src[before : anchor.start]) if anchor is not None else ""
        text = sep + element
    return Edit(pos, pos, text, "added KeepExistingMapCache = true")


def _blank(between: str) -> str:
    """``between`` when it is only whitespace (the draft's indentation), else nothing."""
    return between if between.strip() == "" else ""


def _typens(root: Node) -> str:
    """The prefix the root's own ``xsi:type`` uses (the Esri types namespace)."""
    for attr, value in root.attrs.items():
        if attr.endswith(":type") and ":" in value:
            return value.partition(":")[0]
    raise SDDraftError("<SVCManifest> has no xsi:type naming the Esri types prefix")


def _separators(src: str, array: Node, sample: Node | None) -> tuple[str, str]:
    """(inside a property, between properties): the draft's own whitespace, often none."""
    if sample is None:
        return "", ""
    key = sample.child("Key")
    inner = src[sample.open_end : key.start] if key is not None else ""
    prev_end = array.open_end
    outer = src[prev_end : sample.start]
    return (inner if inner.strip() == "" else ""), (outer if outer.strip() == "" else "")


def _cache_schema_edit(
    src: str,
    root: Node,
    scheme: TilingScheme,
    tile_format: str,
    quality: int,
    q: str,
) -> Edit:
    """Set the top-level ``CacheSchema`` to the scheme (inserted after ``Configurations``,
    or at the end, when the draft has none)."""
    xsi = _prefix(root, XSI, "XMLSchema-instance")
    typens = _typens(root)
    conf = scheme_to_conf_xml(scheme, tile_format, quality)
    body = conf.split(">", 2)[2] if conf.startswith("<?xml") else conf.split(">", 1)[1]
    body = body.rsplit("</CacheInfo>", 1)[0].strip()
    body = re.sub(
        r'xsi:type="typens:([A-Za-z]+)"', lambda m: f"{xsi}:type={q}{typens}:{m.group(1)}{q}", body
    )
    body = re.sub(r">\s+<", "><", body)  # one line, as Pro writes drafts
    existing = root.child("CacheSchema")
    if existing is not None:
        what = "CacheSchema = the service's tiling scheme"
        if existing.self_closing:
            opened = _opened(src, existing)
            return Edit(existing.start, existing.end, f"{opened}{body}</{existing.name}>", what)
        return Edit(existing.open_end, existing.close_start, body, what)
    after = root.child("Configurations") or (root.children[-1] if root.children else None)
    pos = after.end if after is not None else root.open_end
    text = f"<CacheSchema {xsi}:type={q}{typens}:CacheInfo{q}>{body}</CacheSchema>"
    return Edit(pos, pos, text, "added CacheSchema (the service's tiling scheme)")


def edit_file(path: Path, **kwargs) -> list[str]:
    """Edit the draft at ``path`` in place (atomically); return the changes made."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SDDraftError(f"{path}: cannot read the sharing draft ({exc.strerror})") from None
    try:
        new, changes = edit_for_cached_overwrite(data, **kwargs)
    except SDDraftError as exc:
        raise SDDraftError(f"{path}: {exc}") from None
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(new)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return changes


def read_values(data: bytes) -> dict[str, str]:
    """The draft's top-level ``KeepExistingMapCache`` and its configuration properties."""
    src = _decode(data)
    root = scan(src)
    out: dict[str, str] = {}
    keep = root.child("KeepExistingMapCache")
    if keep is not None:
        out["KeepExistingMapCache"] = keep.text(src).strip()
    config = service_configuration(src, root)
    array = (
        _path(config, "Definition", "ConfigurationProperties", "PropertyArray") if config else None
    )
    for prop in array.children if array is not None else []:
        key, val = prop.child("Key"), prop.child("Value")
        if key is not None and val is not None:
            out[key.text(src).strip()] = val.text(src).strip()
    return out
