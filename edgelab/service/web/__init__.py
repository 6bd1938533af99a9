"""The web viewer: server-rendered pages over the results database and the queue.

Pages submit runs and sweeps, follow them live, browse history, compare runs and
export what a filter selects. Everything the browser needs is served from here
(the page scripts, the CSS and plotly.js from the installed ``plotly`` package),
so the viewer works on a machine with no internet access.

The browser never calls ``/api`` directly: pages use their own endpoints
(``/runs/<id>/events``, ``/sweeps/<id>/data``, ...) so that one access check — the
page session or the API token header — protects every page and its data.
"""

from __future__ import annotations

from flask import Blueprint

web = Blueprint("web", __name__)

# Importing the modules attaches their routes and hooks to ``web``.
from edgelab.service.web import access, exports, pages, reports, sweeps  # noqa: E402, F401

__all__ = ["web"]
