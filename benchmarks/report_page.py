"""Size and load time of the ``expllm inspect --html`` page in headless Chromium.

    python benchmarks/report_page.py runs/ferplus-train [--compare runs/other] [--loads 5]
        [--out runs/report-bench.html] [--screenshot runs/report-bench.png]

Builds the page (timed), prints its size and the size of each embedded block, then opens it
``--loads`` times in a fresh tab of one headless Chromium and prints, per load and as the
median, the first contentful paint, the time the charts are drawn, and the *first screen*:
the time from navigation start until the sample browser has rendered its first page of cards
(records inflated, thumbnails in place) — everything in the first screen is then there.
The bar of issue 14: < 25 MB for a 27,000-record FER+ train run, first screen < 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from engine.store.inspection import page as page_mod
from engine.store.inspection import write_html
from engine.store.inspection.browser import HeadlessChromium, find_chromium

TIMINGS = (
    "(() => { const t = window.expllmReport.timings;"
    " const fcp = performance.getEntriesByName('first-contentful-paint')[0];"
    " return {fcp: fcp ? fcp.startTime : null, charts: t.charts, parsed: t.parsed,"
    " first_screen: t.firstScreen}; })()"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="an exp-cot output folder")
    parser.add_argument("--compare", help="a second output folder")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--out", default="runs/report-bench.html")
    parser.add_argument("--screenshot", help="PNG of the first screen")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    target = write_html(Path(args.run), Path(args.out), compare=args.compare)
    build = time.perf_counter() - started
    text = target.read_text()
    blocks = {k: len(page_mod.embedded(text, k)) for k in ("summary-data", "records-data")}
    blocks["thumbs-data"] = len(page_mod.embedded(text, "thumbs-data"))
    records = page_mod.unpack(page_mod.embedded(text, "records-data"))["n"]
    result = {
        "run": args.run,
        "records": records,
        "bytes": target.stat().st_size,
        "mb": round(target.stat().st_size / 1e6, 2),
        "block_mb": {k: round(v / 1e6, 2) for k, v in blocks.items()},
        "build_seconds": round(build, 1),
    }
    if not find_chromium():
        print(json.dumps(result, indent=1))
        print("no Chromium: load times not measured", file=sys.stderr)
        return 0
    loads = []
    with HeadlessChromium(width=1360, height=900) as browser:
        for _ in range(args.loads):
            browser.open(target.resolve().as_uri(), ready="window.expllmReport.ready")
            loads.append({k: round(v) for k, v in browser.evaluate(TIMINGS).items() if v})
        if args.screenshot:
            browser.screenshot(Path(args.screenshot))
    result["loads_ms"] = loads
    result["median_ms"] = {k: round(statistics.median(load[k] for load in loads)) for k in loads[0]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
