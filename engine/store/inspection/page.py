"""Render the self-contained report pages from ``templates/report/``.

A page is one HTML file: the styles and scripts of ``templates/report/`` inlined, the data
embedded as JSON in ``<script type="application/json">`` blocks, the large per-record table
gzip-compressed and base64-encoded (the page inflates it with the browser's
``DecompressionStream``). Nothing is loaded from the network.
"""

from __future__ import annotations

import base64
import gzip
import json
from functools import cache
from pathlib import Path

import jinja2

from engine.resources import templates_dir

REPORT_TEMPLATES = "report"


@cache
def environment() -> jinja2.Environment:
    folder = templates_dir() / REPORT_TEMPLATES
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json_block"] = json_block
    env.filters["pct"] = pct
    env.filters["num"] = num
    env.filters["fmt"] = format  # {{ share | fmt(".1%") }}: Python's format spec
    env.globals["asset"] = asset
    return env


def asset(name: str) -> str:
    """An inlined style or script of ``templates/report/`` (safe inside its element)."""
    text = (templates_dir() / REPORT_TEMPLATES / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"templates/report/{name} must not contain a closing script/style tag")
    return jinja2.utils.markupsafe.Markup(text)


def json_block(value) -> str:
    """JSON for a ``<script type="application/json">`` element: ``<`` escaped."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_default)
    return jinja2.utils.markupsafe.Markup(
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


def pct(value, digits: int = 1) -> str:
    """A share as a percentage ("—" for none)."""
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def num(value, digits: int = 0) -> str:
    """A number with thousands separators ("—" for none)."""
    return "—" if value is None else f"{value:,.{digits}f}"


def safe(text: str) -> str:
    """Text known to need no escaping (base64), passed through as is."""
    return jinja2.utils.markupsafe.Markup(text)


def pack(value) -> str:
    """JSON, gzip-compressed, base64: for ``inflate()`` in ``charts.js``."""
    raw = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_default)
    return base64.b64encode(gzip.compress(raw.encode("utf-8"), compresslevel=6, mtime=0)).decode()


def unpack(text: str):
    """The inverse of ``pack`` (tests and tools read a page's data with it)."""
    return json.loads(gzip.decompress(base64.b64decode(text)))


def render(template: str, target: Path, **context) -> Path:
    """Render ``templates/report/<template>`` with ``context`` into ``target``."""
    page = environment().get_template(template).render(**context)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def embedded(page: str, element_id: str) -> str:
    """The text of the ``<script id=element_id>`` block of a rendered page."""
    start = page.index(f'id="{element_id}"')
    start = page.index(">", start) + 1
    return page[start : page.index("</script>", start)]


def _default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot embed {type(value).__name__} in a report page")
