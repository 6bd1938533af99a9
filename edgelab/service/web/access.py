"""Who may see the pages: nobody needs to log in on loopback; with a token, everyone does.

``edgelab serve``/``up`` refuse a non-loopback bind without ``EDGELAB_API_TOKEN``
(the service starts clusters and containers). When a token is set, the API checks
it on every call (:mod:`edgelab.service.guards`) and this module does the same for the
pages: a request passes with the token in a header (``X-Edgelab-Token`` or
``Authorization: Bearer``, for scripts) or with a session cookie obtained by
typing the token into ``/login``.

The session cookie is signed with a secret kept in the data directory (created
once, mode 0600), so every gunicorn worker and every restart agrees on it and the
CSRF tokens of the forms cannot be guessed by another web page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from flask import (
    Flask,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sansio.blueprints import BlueprintSetupState

from edgelab.service.extensions import current_settings
from edgelab.service.web import web
from edgelab.service.web.format import register_filters
from edgelab.service.web.forms import LoginForm, csrf_problem
from edgelab.settings import Settings

SESSION_KEY = "edgelab_auth"
# Endpoints a visitor without the token may reach.
OPEN_ENDPOINTS = frozenset({"web.login", "web.vendor_js"})
# Endpoints answered with JSON (scripts), not with a redirect to the login page.
DATA_SUFFIXES = ("_data", "_events")


def _secret_key(settings: Settings) -> str:
    """The cookie/CSRF secret, shared through a file by every process on this host."""
    path = Path(settings.data_dir) / "web-secret"
    try:
        return path.read_text().strip() or _write_secret(path)
    except FileNotFoundError:
        return _write_secret(path)
    except OSError:
        return secrets.token_hex(32)


def _write_secret(path: Path) -> str:
    value = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    except FileExistsError:  # another worker won the race: use its secret
        return path.read_text().strip()
    except OSError:
        pass  # read-only data dir: a per-process secret still protects forms
    return value


@web.record_once
def _setup(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    settings: Settings = app.extensions["edgelab_settings"]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(settings)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    # A form may be left open while a long sweep runs: its CSRF token must not expire.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    register_filters(app)


def _token_digest(token: str) -> str:
    """What the session stores: changing the token logs everybody out."""
    return hashlib.sha256(b"edgelab-web:" + token.encode()).hexdigest()


def _header_token() -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :]
    return request.headers.get("X-Edgelab-Token", "")


def is_authorised(settings: Settings) -> bool:
    if not settings.api_token:
        return True
    given = _header_token()
    if given and hmac.compare_digest(given.encode(), settings.api_token.encode()):
        return True
    stored = session.get(SESSION_KEY, "")
    return isinstance(stored, str) and hmac.compare_digest(
        stored.encode(), _token_digest(settings.api_token).encode()
    )


@web.before_request
def _require_token() -> Any:
    settings = current_settings()
    if request.endpoint in OPEN_ENDPOINTS or is_authorised(settings):
        return None
    if (request.endpoint or "").endswith(DATA_SUFFIXES) or request.path.startswith("/export"):
        return jsonify(error="log in at /login or send the API token (X-Edgelab-Token)"), 401
    return redirect(url_for("web.login", next=request.full_path.rstrip("?")))


def _safe_next(target: str | None) -> str:
    """Only same-site paths: /login must not become an open redirect."""
    if not target:
        return url_for("web.history")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.history")
    return target


@web.route("/login", methods=["GET", "POST"])
def login() -> Any:
    settings = current_settings()
    form = LoginForm()
    next_url = _safe_next(request.values.get("next"))
    if not settings.api_token:
        return redirect(next_url)
    if request.method == "POST":
        if not form.validate():
            why = csrf_problem(form)
            # The token field is a password: it is never sent back, so it is typed again.
            refused = (
                f"Not logged in: {why}. Type the token again: the form has a fresh token."
                if why is not None
                else None
            )
            return render_template("login.html", form=form, next=next_url, refused=refused), 400
        if hmac.compare_digest(form.token.data.encode(), settings.api_token.encode()):
            session.clear()
            session[SESSION_KEY] = _token_digest(settings.api_token)
            session.permanent = True
            return redirect(next_url)
        form.token.errors = ["wrong token"]
        return render_template("login.html", form=form, next=next_url), 401
    return render_template("login.html", form=form, next=next_url)


@web.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("web.login"))
