"""report(): one self-contained HTML page (and a PNG per model) from a sweep's or a fleet bench's
results: per model, latency against accuracy for every artifact on every device class with each
class's Pareto front marked, what Runtime(precision="auto") picks on each device, and sortable tables
(plain JavaScript, no framework; `page.html#sort=p50_ms` opens sorted)."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import UsageError

_MARKERS = "os^DvPX*<>"  # one per format, in the order formats first appear
_METRIC_NAMES = {"top1": "top-1 accuracy", "map50_95": "mAP50-95", "top1_agreement": "top-1 agreement with the source",
                 "detection_recall": "detection recall vs the source", "cosine": "output cosine vs the source"}


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """results.json of a sweep (or the folder holding it), or a fleet bench's --json."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read results from {path}: {exc}. Give a sweep's results.json (or its folder) or "
                         "the JSON of `edgesdk bench --fleet --json`.") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UsageError(f"{path} holds no 'models' results: it is not a sweep's or fleet bench's output.")
    return data


def accuracy_of(row: dict[str, Any]) -> tuple[float | None, str | None]:
    """(value, metric) that stands for a row's accuracy: measured on labels when it was, else parity."""
    acc = row.get("accuracy") or {}
    if acc.get("metric") in acc:
        return acc[acc["metric"]], acc["metric"]
    agree = row.get("agreement") or {}
    return agree.get("value"), agree.get("metric")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: as fast or faster and as accurate or more, one strictly."""
    front = []
    for i, (ms, acc) in enumerate(points):
        if not any((m2 <= ms and a2 >= acc) and (m2 < ms or a2 > acc) for j, (m2, a2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def ok_rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every timed row of a model with its device class and host attached."""
    rows = []
    for node in model.get("bench", []):
        for row in node.get("rows", []):
            rows.append({**row, "device_class": node.get("device_class"), "host": node.get("host"),
                         "node": node.get("node"), "machine": (node.get("machine") or {}).get("summary", "")})
    return rows


def chart(name: str, model: dict[str, Any], png: Path) -> Path | None:
    """Latency (p50, log scale) against accuracy, one colour per device class, the Pareto front of each
    class as a line, the auto pick ringed. None when nothing was timed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ok_rows(model) if r.get("status") == "ok" and r.get("p50_ms") and accuracy_of(r)[0] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    colours = plt.get_cmap("tab10")
    classes = sorted({r["device_class"] for r in rows})
    metric = accuracy_of(rows[0])[1]
    markers = {fmt: _MARKERS[i % len(_MARKERS)] for i, fmt in enumerate(dict.fromkeys(r["format"] for r in rows))}
    for k, cls in enumerate(classes):
        mine = [r for r in rows if r["device_class"] == cls]
        pts = [(r["p50_ms"], accuracy_of(r)[0]) for r in mine]
        for i, (r, (x, y)) in enumerate(zip(mine, pts)):
            ax.scatter(x, y, color=colours(k), marker=markers[r["format"]], s=46, zorder=3,
                       edgecolors="black" if r.get("auto_pick") else "none", linewidths=1.6)
            ax.annotate(f"{r['artifact']}/{r['backend'][:4]}", (x, y), fontsize=6, xytext=(4, 4 - 8 * (i % 3)),
                        textcoords="offset points", color="#333")  # staggered: neighbours do not overprint
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color=colours(k), lw=1.3, ls="--",
                label=f"{cls}: Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per inference, ms (log scale)")
    ax.set_ylabel(_METRIC_NAMES.get(metric or "", metric or "accuracy"))
    ax.set_title(f"{name}: latency vs accuracy per device class (ringed: precision='auto' pick)", fontsize=9.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="best")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def _cell(value: Any, text: str | None = None) -> str:
    """A table cell whose data-v attribute holds the sort key (numbers sort as numbers)."""
    shown = html.escape(text if text is not None else ("" if value is None else str(value)))
    key = "" if value is None else html.escape(str(value), quote=True)
    return f'<td data-v="{key}">{shown}</td>'


def _num(value: Any, fmt: str) -> str:
    return _cell(value, format(value, fmt) if isinstance(value, (int, float)) else "")


def _bench_table(model: dict[str, Any]) -> str:
    heads = ["device_class", "host", "artifact", "backend", "precision", "status", "p50_ms", "p90_ms", "p99_ms",
             "throughput_ips", "peak_rss_mb", "size_mb", "accuracy", "ci95", "drop_points", "auto_pick"]
    body = []
    for r in ok_rows(model):
        value, _ = accuracy_of(r)
        acc = r.get("accuracy") or {}
        ci = acc.get(f"{acc.get('metric')}_ci95")
        drop = acc.get("drop")
        body.append("<tr>" + "".join([
            _cell(r["device_class"]), _cell(r.get("host")), _cell(r["artifact"]), _cell(r.get("backend") or "-"),
            _cell(r.get("precision")), _cell(r.get("status"), r.get("status") if r.get("status") == "ok"
                                             else f"{r.get('status')}: {r.get('error') or ''}"[:160]),
            _num(r.get("p50_ms"), ".3f"), _num(r.get("p90_ms"), ".3f"), _num(r.get("p99_ms"), ".3f"),
            _num(r.get("throughput_ips"), ".1f"), _num(r.get("peak_rss_mb"), ".0f"),
            _num((r.get("size_bytes") or 0) / 1e6, ".2f"), _num(value, ".4f"),
            _cell(ci[0] if ci else None, f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else ""),
            _num(drop * 100 if drop is not None else None, "+.2f"),
            _cell(int(bool(r.get("auto_pick"))), "auto" if r.get("auto_pick") else ""),
        ]) + "</tr>")
    return _table("bench", heads, body)


def _cells_table(model: dict[str, Any]) -> str:
    heads = ["cell", "status", "cached", "node", "wall_s", "max_abs", "agreement", "size_mb", "error"]
    body = []
    for c in model.get("cells", []):
        arts = c.get("artifacts") or [{}]
        parity = arts[0].get("parity") or {}
        agree = parity.get("top1_agreement", parity.get("cosine"))
        body.append("<tr>" + "".join([
            _cell(c.get("key")), _cell(c.get("status")), _cell(int(bool(c.get("cached"))), "yes" if c.get("cached") else ""),
            _cell(c.get("node")), _num(c.get("wall_s"), ".1f"), _num(parity.get("max_abs"), ".2e"),
            _num(agree, ".4f"), _num((arts[0].get("size_bytes") or 0) / 1e6, ".2f"),
            _cell(c.get("error"), (c.get("error") or "")[:300]),
        ]) + "</tr>")
    return _table("cells", heads, body)


def _table(kind: str, heads: list[str], body: list[str]) -> str:
    head = "".join(f'<th data-col="{h}" title="click to sort">{h.replace("_", " ")}</th>' for h in heads)
    return (f'<table class="sortable {kind}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _auto_picks(model: dict[str, Any]) -> str:
    items = []
    for node in model.get("bench", []):
        pick = next((r for r in node.get("rows", []) if r.get("auto_pick")), None)
        what = f"{pick['artifact']} on {pick['backend']} ({pick['p50_ms']:.3f} ms)" if pick else \
            f"nothing ({node.get('error') or 'no artifact within tolerance runs there'})"
        items.append(f"<li><b>{html.escape(str(node.get('device_class')))}</b> ({html.escape(str(node.get('host')))}): "
                     f"{html.escape(what)}</li>")
    return f'<ul class="auto">{"".join(items)}</ul>' if items else ""


def _model_section(name: str, model: dict[str, Any], out_dir: Path) -> str:
    png = chart(name, model, out_dir / f"{name}.png")
    img = (f'<img class="chart" alt="{html.escape(name)}: latency vs accuracy" src="data:image/png;base64,'
           f'{base64.b64encode(png.read_bytes()).decode()}">' if png else "<p>No timed results to chart.</p>")
    src = model.get("source_accuracy") or {}
    baseline = ""
    if src.get("status") == "ok":
        metric = src["metric"]
        ci = src.get(f"{metric}_ci95")
        baseline = (f"<p>Source model: {_METRIC_NAMES.get(metric, metric)} <b>{src[metric]:.4f}</b> on {src['samples']} "
                    f"labelled samples" + (f" (95% interval {ci[0]:.3f}-{ci[1]:.3f})" if ci else "") + "</p>")
    labelled = html.escape(model.get("labelled") or "no labels: accuracy is agreement with the source")
    return (f'<section id="model-{html.escape(name)}"><h2>{html.escape(name)}</h2>'
            f'<p class="meta">task {html.escape(str(model.get("task")))}; bundle {html.escape(str(model.get("bundle")))}; '
            f'data: {labelled}</p>{baseline}{img}'
            + (f'<h3>What precision="auto" picks on each device</h3>{_auto_picks(model)}'
               f"<h3>Every artifact on every device class</h3>{_bench_table(model)}" if model.get("bench") else "")
            + (f"<h3>Conversion cells</h3>{_cells_table(model)}" if model.get("cells") else "") + "</section>")


_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:3px 7px;font-size:12.5px;text-align:right}th{background:#f0f0f0;cursor:pointer}
td:nth-child(-n+5){text-align:left}img.chart{max-width:100%;border:1px solid #ddd}.meta{color:#555}"""

_SCRIPT = """
function sortTable(table, col, dir) {
  const i = [...table.tHead.rows[0].cells].findIndex(th => th.dataset.col === col);
  if (i < 0) return;
  const rows = [...table.tBodies[0].rows];
  const key = r => { const v = r.cells[i].dataset.v; const n = parseFloat(v); return v !== '' && !isNaN(n) ? n : v; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === '' || y === '') return (x === '') - (y === '');
    return (x < y ? -1 : x > y ? 1 : 0) * dir; });
  rows.forEach(r => table.tBodies[0].appendChild(r));
  table.dataset.sorted = col + (dir > 0 ? ' asc' : ' desc');
}
document.querySelectorAll('table.sortable th').forEach(th => th.addEventListener('click', () => {
  const t = th.closest('table'); const asc = t.dataset.sorted !== th.dataset.col + ' asc';
  sortTable(t, th.dataset.col, asc ? 1 : -1); }));
const m = location.hash.match(/sort=([\\w]+)(?:,(desc))?/);
if (m) document.querySelectorAll('table.sortable').forEach(t => sortTable(t, m[1], m[2] ? -1 : 1));
"""


def report(results: str | os.PathLike | dict[str, Any], out: str | os.PathLike) -> Path:
    """Write the HTML page to out (a .html file; its PNGs beside it) and return its path."""
    from ..core.bundle import write_atomic

    data = results if isinstance(results, dict) else load_results(results)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"The report is an HTML file: give a path ending in .html, not {out}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = "".join(_model_section(name, model, out.parent) for name, model in data["models"].items())
    cluster = data.get("cluster") or {}
    classes = sorted({n.get("device_class") for m in data["models"].values() for n in m.get("bench", [])} - {None})
    summary = (f"<p class=\"meta\">Ray: {html.escape(str(cluster.get('address', '?')))}; device classes: "
               f"{html.escape(', '.join(classes) or 'none')}; wall time {data.get('wall_s', '?')} s; "
               f"phases {html.escape(json.dumps(data.get('phases_s', {})))}; started {html.escape(str(data.get('started', '')))}</p>")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>edgesdk report</title><style>{_STYLE}</style>"
            f"</head><body><h1>edgesdk report</h1>{summary}{sections}<script>{_SCRIPT}</script></body></html>")
    write_atomic(out, page)
    return out
