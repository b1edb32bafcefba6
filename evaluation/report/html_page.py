"""The HTML rendering: one page (inline CSS, figures as base64 PNG); run videos are MP4
files linked beside it (``videos/``, copied there by :func:`evaluation.report.write_reports`)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation.report.figures import (
    f1_latency_figure,
    learning_curve_figure,
    sweep_figure,
    trajectory_figures,
)
from evaluation.report.formats import laps_cell
from evaluation.report.tables import Report, Table, _short

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;
max-width:1400px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums}
table.classes td{font-size:11px;text-align:center}
tr.infeasible{background:#fff0f0} tr.stale td{color:#777}
tr.group th{background:#e4ecf7;text-align:left;font-size:14px}
.bad{color:#b00020;font-weight:600} .ok{color:#1b7f1b}
.note{color:#555;font-size:12px;max-width:1100px}
pre{background:#f7f7f7;padding:.8em;white-space:pre-wrap}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:12px;color:#444}
img{max-width:100%;height:auto}
div.videos{display:flex;flex-wrap:wrap} figure.video video{width:480px;max-width:100%}
figure.video.missing{color:#b00020}
"""


_NUMERIC = re.compile(r"^[-+]?[0-9.]+(\s*[/(].*)?$")


def _html_table(
    t: Table,
    row_classes: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> str:
    """The table under its heading; ``groups`` (one label per row) puts a header row
    before each run of rows with the same label (the board's section per target)."""
    out = [f"<h2>{html.escape(t.title)}</h2>", f'<table class="{t.css_class}">', "<thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in t.headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        if groups and (i == 0 or groups[i] != groups[i - 1]):
            out.append(
                f'<tr class="group"><th colspan="{len(t.headers)}">'
                f"{html.escape(groups[i])}</th></tr>"
            )
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for c in row:
            text = c if t.raw_html_cells else html.escape(c)
            if not t.raw_html_cells and c.startswith("✗"):
                text = f'<span class="bad">{text}</span>'
            elif not t.raw_html_cells and c.startswith("✓"):
                text = f'<span class="ok">{text}</span>'
            num = ' class="num"' if _NUMERIC.match(c) else ""
            cells.append(f"<td{num}>{text}</td>")
        out.append(f"<tr{cls}>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f'<p class="note">{html.escape(t.note)}</p>')
    return "\n".join(out)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _videos(report: Report, links: Mapping[str, str] | None) -> str:
    """The run videos, one ``<video>`` per run (board order) linking the MP4 beside the
    page; a file that is gone is named, not hidden."""
    found = report.run_videos()
    if not found:
        return ""
    if links is None:  # not written beside the page: link the files where they are
        links = {v: Path(v).resolve().as_uri() for *_, v in found if Path(v).is_file()}
    parts = [
        "<h2>Run videos</h2>",
        '<p class="note">Each closed-loop run that was evaluated with --video: the pilot\'s '
        "camera (with the servo's steering) beside the top-down map. The MP4 files sit in "
        "videos/ beside this page (linked, not embedded: a page with every run inlined "
        "would weigh tens of megabytes and be read whole before it shows).</p>",
        '<div class="videos">',
    ]
    for e, r, env, video in found:
        laps = laps_cell(r.get("laps_completed"), r.get("laps_target"), r.get("interventions"))
        caption = (
            f"#{e.rank} {e.label} ({e.target}): {r.get('track')} {r.get('direction')}, seed "
            f"{r.get('seed')}{', randomized' if env == 'randomized' else ''}; {laps} laps"
        )
        href = links.get(video)
        if href is None:
            parts.append(
                f'<figure class="video missing"><figcaption>{html.escape(caption)}: video '
                f"missing ({html.escape(video)})</figcaption></figure>"
            )
            continue
        parts.append(
            f'<figure class="video"><video controls muted playsinline preload="metadata" '
            f'src="{html.escape(href)}"></video>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div>")
    return "\n".join(parts)


def render_html(report: Report, video_links: Mapping[str, str] | None = None) -> str:
    """One page: inline CSS, plots as base64 PNG, nothing fetched from elsewhere; the run
    videos are linked (``video_links``: each video's path -> its href beside the page, as
    :func:`evaluation.report.write_reports` copies them; None: the files where they are)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>trackpilot leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>trackpilot leaderboard</h1>",
        f'<p class="note">Database {html.escape(report.db)}; code {html.escape(str(report.ctx.code_version))}; '
        f"dataset {html.escape(_short(report.ctx.dataset_fingerprint))}.</p>",
    ]
    if report.notes:
        parts.append("<h2>Story</h2><pre>" + html.escape("\n".join(report.notes)) + "</pre>")
    board = report.leaderboard_table()
    classes = [
        " ".join(
            c for c in ("infeasible" if not e.feasible else "", "stale" if e.stale else "") if c
        )
        for e in report.entries
    ]
    groups = [e.target for e in report.entries]
    parts.append(_html_table(board, classes, groups if len(set(groups)) > 1 else None))
    seeds = report.seeds_table()
    if seeds is not None:
        parts.append(_html_table(seeds))
    recipe = report.recipe_table()
    if recipe is not None:
        parts.append(_html_table(recipe))
        scatter = f1_latency_figure(report)
        if scatter:
            cap, b64 = scatter
            parts.append("<h2>Macro F1 against latency</h2>")
            parts.append(
                f'<figure class="f1-latency">{_img(b64, "macro F1 vs latency")}'
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            )
    parts.append(_html_table(report.offline_table()))
    ct = report.class_table(html_cells=True)
    if ct is not None:
        parts.append(_html_table(ct))
    figs = trajectory_figures(report)
    if figs:
        parts.append("<h2>Trajectories over the track maps</h2>")
        parts += [
            f"<figure>{_img(b64, cap)}<figcaption>{html.escape(cap)}</figcaption></figure>"
            for cap, b64 in figs
        ]
    curves = learning_curve_figure(report)
    if curves:
        parts.append("<h2>Learning curves</h2>")
        parts.append(f"<figure>{_img(curves, 'learning curves')}</figure>")
    st = report.sweep_table()
    if st is not None:
        parts.append(_html_table(st))
        sweep = sweep_figure(report)
        if sweep:
            parts.append(f"<figure>{_img(sweep, 'latency sweep')}</figure>")
    videos = _videos(report, video_links)
    if videos:
        parts.append(videos)
    parts.append(_html_table(report.runs_table()))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
