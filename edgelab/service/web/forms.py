"""The forms of the viewer: Flask-WTF for CSRF, the run/sweep parsers for validation.

Fields are plain text so that every value, however wrong, reaches
:func:`edgelab.runs.config.parse_config` or the sweep parser: the page then shows
the same message beside the field that the API returns for the same input, and
the user's input is kept as typed.
"""

from __future__ import annotations

import re
from typing import Any

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired

from edgelab.catalog import ModelInfo
from edgelab.netem.profile import ACCEPTED_FORMS
from edgelab.runs.config import BACKENDS, ENGINES, MAX_TOKENS_LIMIT, config_from_text
from edgelab.validation.fields import MAX_DELAY_MS
from edgelab.validation.values import FieldError, int_text, number_text, quote

LATENCY_HELP = (
    "Either min/max in ms (uniform between them; equal or max empty = fixed), or a "
    "profile: " + ACCEPTED_FORMS + ". A profile, when given, wins over min/max."
)
SWEEP_LATENCY_HELP = (
    "One or more latency profiles, comma-separated, each one a cell of the latency axis "
    "applied to every root↔worker link: '0ms' (none), '20ms' (fixed), '10ms..50ms' "
    "(uniform), '20ms~5ms' (normal), optionally '@100mbit' for a bandwidth cap or "
    "'UP/DOWN' for different directions."
)
BANDWIDTH_HELP = "Per-link cap such as 100mbit, 1gbit or 500kbit (empty = unlimited)."
LOSS_HELP = (
    "Packet loss on every link, each way: 0-50 %, e.g. 1% or 0.5 (empty = none); a link's "
    "own loss:P% below wins. Real drops (nftables), so Docker or local nodes as root."
)
SWEEP_LOSS_HELP = (
    "One or more losses, comma-separated, each a cell of the loss axis on every link, "
    "e.g. 0%, 1%, 2% (empty = none). Cells that differ only in loss share a warm cluster "
    "(local: the lossless ones start their own)."
)


def engine_help() -> str:
    """What the engine field says: whether dllama can be chosen here, and how to enable it.

    Read on every page view, so setting ``EDGELAB_DLLAMA_BIN`` in the service's
    environment and restarting is all it takes. The check is the same one
    ``parse_config`` makes when the form is submitted.
    """
    from edgelab.engines.base import EngineError
    from edgelab.engines.dllama.binary import ENV_VAR, HOW_TO, resolve_binary

    try:
        binary = resolve_binary()
    except EngineError as exc:
        problem = str(exc).removesuffix(HOW_TO).rstrip(":; ")
        return (
            f"dllama (distributed-llama) is not usable here: {problem}. To enable it, build "
            "distributed-llama yourself (git clone https://github.com/b4rtaz/distributed-llama "
            f"&& make dllama), set {ENV_VAR}=/path/to/dllama in the environment of the service "
            "and its workers, and restart them."
        )
    from edgelab.engines.dllama.binary import resolve_api_binary

    try:
        api = resolve_api_binary(None, binary)
    except EngineError as exc:
        return (
            f"dllama (distributed-llama) runs {binary}, one dllama inference per run only "
            f"(run option dllama_mode: inference): {exc}"
        )
    return f"dllama (distributed-llama) runs {binary}, with warm roots through {api}."


def engines_for(models: list[ModelInfo]) -> dict[str, str]:
    """Each model's engine: the first of ``ENGINES`` whose own check accepts its format.

    The run form preselects it when a model is picked, and the default model is
    one the default engine runs, so Start with only a prompt typed just works.
    """
    from edgelab.engines import get_engine

    found: dict[str, str] = {}
    for model in models:
        for engine in ENGINES:
            if "model" not in get_engine(engine).run_problems(model, 1):
                found[model.name] = engine
                break
    return found


def default_model(models: list[ModelInfo], engine: str = ENGINES[0]) -> str | None:
    """The first catalogued model that ``engine`` can run (None if there is none)."""
    runs_on = engines_for(models)
    return next((m.name for m in models if runs_on.get(m.name) == engine), None)


class LoginForm(FlaskForm):  # type: ignore[misc]
    token = PasswordField("API token", validators=[InputRequired("type the API token")])


class ActionForm(FlaskForm):  # type: ignore[misc]
    """A button that changes something (cancel, resume, re-run): CSRF only."""


_SESSION_GONE = (
    "the page was loaded in a session your browser no longer has (a login since then, "
    "cleared cookies, or cookies blocked for this site)"
)
#: Why Flask-WTF refused a form's CSRF token (its messages), in the user's terms. The
#: token is tied to the browser's session cookie and does not expire by time
#: (``WTF_CSRF_TIME_LIMIT`` is off), so "expired" is rarely what happened. (Building a
#: form starts a session when there is none, so a lost cookie reads as a mismatch.)
CSRF_WHY = {
    "The CSRF token is missing.": "the form arrived without its security token, "
    "so it was not sent by this page",
    "The CSRF session token is missing.": _SESSION_GONE,
    "The CSRF tokens do not match.": _SESSION_GONE,
    "The CSRF token is invalid.": "its security token is not one this server issued "
    "(the server's secret changed since the page was loaded, or the token was altered)",
    "The CSRF token has expired.": "its security token has expired",
}


def csrf_problem(form: FlaskForm) -> str | None:
    """What went wrong with ``form``'s CSRF token after ``validate()``, or None if nothing."""
    errors = form.errors.get("csrf_token")
    if not errors:
        return None
    return CSRF_WHY.get(str(errors[0]), "its security token was not accepted")


def form_refused(why: str) -> str:
    """The message above an input form (run, sweep) that failed its CSRF check.

    The page is rendered again from what was posted, with a fresh token, so the
    user's input is not lost: saying so tells them that submitting again is safe.
    """
    return (
        f"Nothing was submitted: {why}. Your input is kept below and the form has a "
        "fresh token: check it and submit again (allow cookies for this site if they "
        "are blocked)."
    )


def button_refused(why: str) -> str:
    """The error page of an action button (cancel, re-run, resume) that failed its CSRF check."""
    return (
        f"Nothing was changed: {why}. Reload the page (it gets a fresh token) and press "
        "the button again."
    )


class RunForm(FlaskForm):  # type: ignore[misc]
    prompt = TextAreaField("Prompt")
    model = SelectField("Model", validate_choice=False)
    nodes = StringField("Nodes", default="3")
    threads = StringField("Threads per node", default="1")
    latency_min = StringField("Latency min (ms)", default="")
    latency_max = StringField("Latency max (ms)", default="")
    latency_profile = StringField("or latency profile", default="")
    bandwidth = StringField("Bandwidth", default="")
    loss = StringField("Packet loss", default="")
    max_tokens = StringField(f"Max tokens (1-{MAX_TOKENS_LIMIT})", default="64")
    backend = SelectField("Backend", choices=list(BACKENDS), validate_choice=False)
    engine = SelectField("Engine", choices=list(ENGINES), validate_choice=False)
    seed = StringField("Seed", default="0")
    devices = TextAreaField("Devices per node", default="")
    links = TextAreaField("Links per worker", default="")


#: Help beside the topology fields of the run and sweep forms.
DEVICES_HELP = (
    "one node per line (or ';'): NODE=PRESET or NODE=key:value,... with threads, cpus "
    "(a CPU quota in cores), mem, e.g. worker2=slow or worker2=cpus:0.25,threads:1; "
    "other nodes keep the values above"
)
LINKS_HELP = (
    "one worker per line (or ';'): NODE=[PROFILE][,bandwidth:RATE], e.g. worker2=30ms or "
    "worker1=bandwidth:20mbit (a missing profile is the latency above)"
)
SWEEP_DEVICES_HELP = (
    "one axis value per line: a named topology (uniform, one-slow-worker, see "
    "`edgelab devices list`) or NODE=DEVICE; NODE=DEVICE, e.g. worker2=slow; worker1=cpus:0.5"
)
SWEEP_LINKS_HELP = (
    "one axis value per line: NODE=LINK; NODE=LINK, e.g. worker2=30ms; worker1=1ms "
    "(empty line = every link the latency axis)"
)


def topology_text(raw: str, field: str, errors: dict[str, str]) -> dict[str, str] | None:
    """``"worker2=slow; worker1=cpus:0.5"`` (or one per line) as ``{node: text}``."""
    from edgelab.topology.spec import TopologyError, parse_assignments

    items = [part.strip() for part in re.split(r"[;\n]", raw or "") if part.strip()]
    if not items:
        return None
    try:
        return parse_assignments(items, field)
    except TopologyError as exc:
        errors[field] = exc.errors[field]
        return None


class SweepForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", default="sweep")
    model = StringField("Models", default="")
    nodes = StringField("Nodes", default="1, 2, 3")
    threads = StringField("Threads per node", default="1")
    latency = StringField("Latency profiles", default="0ms, 20ms")
    bandwidth = StringField("Bandwidths", default="")
    loss = StringField("Packet loss", default="")
    max_tokens = StringField("Max tokens", default="16")
    prompts = TextAreaField("Prompts (one per line)")
    repetitions = StringField("Repetitions", default="1")
    backend = SelectField("Backend", choices=list(BACKENDS), validate_choice=False)
    engine = SelectField("Engine", choices=list(ENGINES), validate_choice=False)
    devices = TextAreaField("Devices (topologies)", default="")
    links = TextAreaField("Links", default="")


def _number_text(raw: str, field: str, errors: dict[str, str]) -> float | None:
    text = raw.strip().lower().removesuffix("ms").strip()
    if not text:
        return None
    try:
        value = number_text(text)
    except FieldError:
        errors[field] = f"must be a number of milliseconds, got {quote(raw)}"
        return None
    if not 0 <= value <= MAX_DELAY_MS:
        errors[field] = f"must be between 0 and {MAX_DELAY_MS:g} ms, got {quote(raw)}"
        return None
    return value


def _ms(value: float) -> str:
    return f"{int(value)}ms" if value == int(value) else f"{value}ms"


def run_input(form: RunForm) -> tuple[dict[str, Any], dict[str, str]]:
    """The form as ``parse_config`` input, plus errors only the form can have.

    Latency comes from the profile field if filled, else from min/max.
    """
    errors: dict[str, str] = {}
    profile = (form.latency_profile.data or "").strip()
    lo = _number_text(form.latency_min.data or "", "latency_min", errors)
    hi = _number_text(form.latency_max.data or "", "latency_max", errors)
    if profile:
        latency = profile
    elif lo is None and hi is None:
        latency = "0ms"
    elif lo is not None and (hi is None or hi == lo):
        latency = _ms(lo)
    elif lo is None:
        errors.setdefault(
            "latency_min", "give the minimum too (or only a minimum for a fixed delay)"
        )
        latency = "0ms"
    else:
        assert hi is not None
        if hi < lo:
            errors["latency_max"] = f"must be at least the minimum ({_ms(lo)})"
        latency = f"{_ms(lo)}..{_ms(hi)}"
    text: dict[str, Any] = {
        "prompt": form.prompt.data or "",
        "model": form.model.data or "",
        "nodes": form.nodes.data or "",
        "threads": form.threads.data or "",
        "latency": latency,
        "bandwidth": (form.bandwidth.data or "").strip() or None,
        "loss": (form.loss.data or "").strip() or "0%",
        "max_tokens": form.max_tokens.data or "",
        "backend": form.backend.data or "",
        "engine": form.engine.data or "",
        "seed": (form.seed.data or "").strip() or "0",
    }
    data, text_errors = config_from_text(text)
    errors.update(text_errors)
    for field in ("devices", "links"):
        found = topology_text(getattr(form, field).data or "", field, errors)
        if found:
            data[field] = found
    return data, errors


def latency_error_field(form: RunForm) -> str:
    """Where a ``latency`` error from ``parse_config`` belongs on the form."""
    return "latency_profile" if (form.latency_profile.data or "").strip() else "latency_min"


_SPLIT = re.compile(r"[,;\n]")


def split_list(raw: str) -> list[str]:
    """'1, 2,3' -> ['1', '2', '3']; commas, semicolons or new lines separate values."""
    return [part.strip() for part in _SPLIT.split(raw or "") if part.strip()]


def _maybe_int(text: str) -> int | str:
    """Whole numbers (ASCII digits) become ints; anything else stays text for the parser
    to report. 5,000-digit input stays text too (``int_text`` takes at most 19 digits)."""
    try:
        return int_text(text)
    except FieldError:
        return text


def sweep_input(form: SweepForm, default_model: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The form as a sweep spec (the same fields as ``POST /api/sweeps``)."""
    errors: dict[str, str] = {}
    prompts = [line.strip() for line in (form.prompts.data or "").splitlines() if line.strip()]
    reps_text = (form.repetitions.data or "").strip() or "1"
    repetitions: int | str = _maybe_int(reps_text)
    spec: dict[str, Any] = {
        "name": (form.name.data or "").strip() or "sweep",
        "model": split_list(form.model.data or "") or [default_model],
        "nodes": [_maybe_int(v) for v in split_list(form.nodes.data or "")],
        "threads": [_maybe_int(v) for v in split_list(form.threads.data or "")] or [1],
        "latency": split_list(form.latency.data or "") or ["0ms"],
        "bandwidth": split_list(form.bandwidth.data or "") or [None],
        "loss": split_list(form.loss.data or "") or ["0%"],
        "max_tokens": [_maybe_int(v) for v in split_list(form.max_tokens.data or "")],
        "prompts": prompts,
        "repetitions": repetitions,
        "backend": form.backend.data or "local",
        "engine": form.engine.data or "llamacpp",
    }
    for field in ("nodes", "max_tokens"):
        if not spec[field]:
            errors[field] = "give at least one value"
    for field in ("devices", "links"):
        values: list[Any] = []
        for line in (getattr(form, field).data or "").splitlines():
            line = line.strip()
            if not line:
                continue
            if field == "devices" and "=" not in line:
                values.append(line)  # a named topology
            else:
                values.append(topology_text(line, field, errors) or None)
        if values:
            spec[field] = values
    if not prompts:
        errors["prompts"] = "give at least one prompt (one per line)"
    return spec, errors
