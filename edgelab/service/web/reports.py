"""The sweep report as a download: ``GET /sweeps/<id>/report`` (HTML, or ``?format=md``).

The same :mod:`edgelab.reports` code as ``edgelab report`` writes it: the HTML is
the one self-contained file; Markdown comes as a zip of the ``.md`` and its
figure files, since a download is one file.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from flask import Response, abort, request

from edgelab.service.extensions import db
from edgelab.service.web import web

FORMATS = ("html", "md")


@web.get("/sweeps/<int:sweep_id>/report")
def sweep_report(sweep_id: int) -> Any:
    # Imported here: matplotlib costs ~0.5 s and is needed only for this download.
    from edgelab.reports import build_report, render_html, render_markdown

    fmt = request.args.get("format", "html")
    if fmt not in FORMATS:
        abort(400, f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        data = build_report(db.session, sweep_id)
    except LookupError:
        abort(404, f"sweep {sweep_id} not found")
    stem = f"edgelab-sweep-{sweep_id}-report"
    if fmt == "html":
        return Response(
            render_html(data),
            mimetype="text/html",
            headers={"Content-Disposition": f'attachment; filename="{stem}.html"'},
        )
    text, files = render_markdown(data, f"{stem}-figures")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{stem}.md", text)
        for name, content in files.items():
            zf.writestr(name, content)
    return Response(
        buf.getvalue(),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'},
    )
