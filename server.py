"""The studio's server: Streamlit pages plus the HTTP routes the app exposes.

`streamlit run server.py` finds the `st.App` below and serves `app.py` with
these extra routes on the same port:
- GET /api/health                      tracker and store health (JSON)
- GET /images/{sha256}.png             kept originals, content-addressed
- GET /thumbs/{sha256}.webp            small WebP thumbnails
- GET /exports/{token}.zip?name=…      a bulk export prepared in the Gallery, downloaded as `name` (410 after 1 hour)
- POST /hiapi/callback/{token}         HiAPI's task callbacks (when HIAPI_CALLBACK_URL is set)
- GET /kits/{token}/{name}             a delivery kit (`<creative>.zip`) or its contact sheet (410 after 1 hour)
- GET /refs/{sha256}.{ext}?exp=…&sig=…  a reference image (image-to-image), signed and expiring; public
- GET /api/events                      the push channel (server-sent events): `hello` on connect, then a
                                       `change` whenever the tracker publishes (see studio/events.py)
- GET /api/view/queue?limit=N          the queue's view model (JSON) its page fetches when told of a change
- GET /api/view/gallery?offset=&limit=&<filters>  a window of the gallery grid's view model (JSON), the
                                       filters as components.gallery.query_string writes them
Path templates come from `studio.routes`, the one module that builds route URLs.
Images, exports, kits and references are blobs (`studio.blobs`): served as files
from a local store (immutable cache headers for images, so the browser caches
them and nothing passes through Streamlit's in-memory media store), redirected
to a store's short-lived URL, or streamed.
The callback route only moves bytes: every decision is `studio.callbacks`'.

Access (see SECURITY.md): with a real API key the server refuses, at start,
to listen beyond loopback unless STUDIO_ALLOW_REMOTE=1 or a login is
configured; with a login every route here answers 401 until signed in.
It also refuses when another studio holds the data folder's lock. Run it
with `python -m launch` (see launch.py) so these refusals come before the
port is bound; plain `streamlit run server.py` binds first.
When the data folder, disk or database is unusable the server still starts,
prints one clear line, and every page and route says what is wrong.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from contextlib import asynccontextmanager

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from access.routes import login_configured, protect, secrets_dict
from studio import events as ev
from studio import routes
from studio import services as core
from studio.blob_keys import export_key, is_kit_file, is_token, kit_key, original_key, thumb_key
from studio.blobs import LocalBlobStore
from studio.callbacks import MAX_BODY_BYTES, BodyTooLarge, Verdict, read_capped
from studio.config import ConfigError, Settings
from studio.export import EXPORT_LIFETIME_S, link_expired
from studio.health import SENTENCES
from studio.kit import KIT_LIFETIME_S
from studio.references import EXT_MEDIA
from studio.startup import DataFolderInUse, StartupError, bind_problem, hold_data_lock, protect_data_dir

_SHA = re.compile(r"^[0-9a-f]{64}$")
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _check_configuration() -> None:
    """Refuse to start (one line naming the variable and the fix, exit 2) on a DATABASE_URL,
    STORAGE_URL or S3 setting the studio cannot use; credentials in it are masked."""
    try:
        Settings.load(secrets=secrets_dict())
    except ConfigError as exc:
        print(f"Studio not started: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _check_bind_address() -> None:
    """Refuse to start (one clear line, no traceback) on an exposed address with a real key."""
    secrets = secrets_dict()
    settings = Settings.load(secrets=secrets)
    problem = bind_problem(
        st.config.get_option("server.address"),
        real_key=not settings.simulated,
        allow_remote=settings.allow_remote,
        login_configured=login_configured(secrets),
    )
    if problem:
        print(f"Studio not started: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _check_role() -> None:
    """Refuse to start (one line, exit 2) on a STUDIO_ROLE that is not a role, or one that serves no pages."""
    settings = Settings.load(secrets=secrets_dict())
    problem = settings.role_problem
    if problem is None and settings.role == "worker":
        problem = (
            "STUDIO_ROLE=worker serves no pages. Start the worker with `python -m studio.worker`, "
            "and this server with STUDIO_ROLE=web (or leave STUDIO_ROLE unset for both in one process)."
        )
    if problem:
        print(f"Studio not started: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _check_data_folder() -> None:
    """Refuse to start (one line, exit 2) when another studio holds the data folder.

    Also makes everything this process writes owner-only from here on. A data
    folder that cannot be used at all is left to `boot`, which every page shows.
    """
    settings = Settings.load(secrets=secrets_dict())
    data = settings.data_dir
    protect_data_dir(data)
    if not data.is_dir():
        return  # created at boot; no other studio can be using it
    try:
        hold_data_lock(data, shared=settings.role != "all")
    except DataFolderInUse as exc:  # any other problem is boot's to report, on every page
        print(f"Studio not started: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# Both run when server.py is imported: `python -m launch` (what `make run` uses) imports
# it before the port is bound, so nothing ever listens when the studio refuses.
_check_configuration()  # first: the others load the settings too
_check_role()
_check_bind_address()
_check_data_folder()


def _services() -> core.Services:
    return core.current() or core.boot(Settings.load(secrets=secrets_dict()))


def _unavailable(exc: StartupError) -> Response:
    return JSONResponse({"status": "unavailable", "problem": exc.message}, status_code=503)


def _needs_services(handler):
    """A route that cannot work without the store answers 503 with the start-up problem."""

    async def run(request: Request) -> Response:
        try:
            s = _services()
        except StartupError as exc:
            return _unavailable(exc)
        try:
            return await handler(request)
        except Exception as exc:
            # The database or the bucket went away meanwhile: the same one sentence as the pages,
            # and a 503 HiAPI retries a callback after (nothing it sent is lost).
            dep = s.health.noticed_error(exc)
            if dep is None:
                raise
            body = {"status": "unavailable", "problem": SENTENCES[dep]}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    run.__name__ = handler.__name__
    return run


async def health(request: Request) -> Response:
    s = _services()
    try:
        h = await run_in_threadpool(s.intake.health)
    except Exception as exc:
        # The database away: still an answer (200), so a load balancer keeps sending pages here,
        # where they say so, rather than its own error page.
        if s.health.noticed_error(exc) is None:
            raise
        body = {"status": "degraded", "mode": s.settings.mode, "role": s.role, "outage": s.health.state()}
        return JSONResponse(body)
    # A web process follows no task (its workers are other processes): its health is its own.
    ok = (h["alive"] or s.tracker is None) and not s.health.down()
    body = {"status": "ok" if ok else "degraded", "mode": s.settings.mode, "role": s.role, "tracker": h}
    body["outage"] = s.health.state()  # "database", "storage" or both while they do not answer
    if s.simulator is not None:  # where tests and demos find /_sim/stats; the key is never shown
        body["simulator"] = s.simulator.base_url
    return JSONResponse(body)


def _verdict(v: Verdict) -> Response:
    return JSONResponse({"ok": v.ok, "reason": v.reason}, status_code=v.status)


async def hiapi_callback(request: Request) -> Response:
    receiver = _services().callbacks
    if receiver is None:  # callbacks are off: no such route
        return _verdict(Verdict(404, "not found"))
    token = request.path_params["token"]
    refused = receiver.precheck(token, request.headers.get("content-length"))
    if refused is not None:
        return _verdict(refused)
    try:
        # Stops at the cap even when no (or a false) Content-Length was sent.
        body = await read_capped(request.stream())
    except BodyTooLarge:
        return _verdict(receiver.refuse(413, f"body over {MAX_BODY_BYTES} bytes"))
    except ClientDisconnect:
        return Response(status_code=400)
    # Verifying and storing touch SQLite: off the event loop.
    return _verdict(await run_in_threadpool(receiver.receive, token, request.headers, body))


def _blob(key: str, media_type: str, headers: dict[str, str]) -> Response:
    """A blob as a response: the file itself from a local store, a redirect to the
    store's own short-lived URL when it has one (S3), else streamed from `open()`.
    Callers check `exists` first and answer 404 themselves."""
    blobs = _services().blobs
    if isinstance(blobs, LocalBlobStore):
        return FileResponse(blobs.path(key), media_type=media_type, headers=headers)
    url = blobs.url(key, expires_s=300)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})

    def chunks():
        with blobs.open(key) as f:
            while piece := f.read(1 << 16):
                yield piece

    return StreamingResponse(chunks(), media_type=media_type, headers=headers)


def _image_file(kind: str):
    async def handler(request: Request) -> Response:
        sha = request.path_params["sha"]
        if not _SHA.match(sha):
            return Response("not found", status_code=404)
        key = original_key(sha) if kind == "original" else thumb_key(sha)
        if not await run_in_threadpool(_services().blobs.exists, key):
            return Response("not found", status_code=404)
        media = "image/png" if kind == "original" else "image/webp"
        headers = dict(_IMMUTABLE)
        name = request.query_params.get("download")
        if name and kind == "original":
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120] or f"{sha}.png"
            headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        return _blob(key, media, headers)

    return handler


_EXPORT_GONE = "This export link is unknown or has expired; prepare the zip again in the Gallery."
_KIT_GONE = "This kit link is unknown or has expired; make the kit again in the Gallery."


def _expired(what: str, where: str) -> Response:
    minutes = int(EXPORT_LIFETIME_S // 60)
    return Response(
        f"This {what} link has expired (links work for {minutes} minutes); {where}",
        status_code=410,
        media_type="text/plain",
    )


async def export(request: Request) -> Response:
    token = request.path_params["token"]
    if not is_token(token):
        return Response(_EXPORT_GONE, status_code=404, media_type="text/plain")
    key = export_key(token)
    if not await run_in_threadpool(_services().blobs.exists, key):
        return Response(_EXPORT_GONE, status_code=404, media_type="text/plain")
    if link_expired(token, EXPORT_LIFETIME_S):
        return _expired("export", "prepare the zip again in the Gallery.")
    # The page names the download by its content (`?name=`, see studio.export.*_zip_name).
    name = re.sub(r"[^A-Za-z0-9._-]", "_", request.query_params.get("name", ""))[:120]
    if not name.endswith(".zip") or name.startswith("."):
        name = "studio-export.zip"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return _blob(key, "application/zip", headers)


async def kit(request: Request) -> Response:
    """A delivery kit written by studio.kit: the zip as a download, the contact sheet inline."""
    token, name = request.path_params["token"], request.path_params["name"]
    if not is_token(token) or not is_kit_file(name):
        return Response(_KIT_GONE, status_code=404, media_type="text/plain")
    key = kit_key(token, name)
    if not await run_in_threadpool(_services().blobs.exists, key):
        return Response(_KIT_GONE, status_code=404, media_type="text/plain")
    if link_expired(token, KIT_LIFETIME_S):
        return _expired("kit", "make the kit again in the Gallery.")
    if name.endswith(".zip"):
        headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
        return _blob(key, "application/zip", headers)
    # A token names one kit's files for good, so the preview may be cached for the kit's lifetime.
    return _blob(key, "image/png", {"Cache-Control": f"private, max-age={int(KIT_LIFETIME_S)}"})


async def reference(request: Request) -> Response:
    """A reference image, for HiAPI (image-to-image) and the Studio's own thumbnails.

    Public like the callback route, since HiAPI fetches it without a login: the
    URL's HMAC signature and expiry are its key (studio.references), and an
    unsigned, forged or expired link is a plain 404.
    """
    shelf = _services().references
    name = request.path_params["name"]
    q = request.query_params
    if shelf is None or not shelf.verify(name, q.get("exp"), q.get("sig")):
        return Response("not found", status_code=404)
    key = shelf.key(name)
    if not await run_in_threadpool(shelf.blobs.exists, key):
        return Response("not found", status_code=404)
    media = EXT_MEDIA[name.rsplit(".", 1)[1]]
    return _blob(key, media, {"Cache-Control": "private, max-age=3600"})


_KEEPALIVE_S = 15.0
_COALESCE_S = 0.03  # a burst of events (16 ratios created at once) becomes one `change`
_exiting = None  # uvicorn's server, to end the streams when it shuts down (it waits for them)


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def events(request: Request) -> Response:
    """The push channel: `hello` with the bus's (boot, seq) at once, then `change` events.

    A page compares (boot, seq) with its view's and fetches a fresh view when
    they differ, so a reconnect after a restart or a sleep catches up. The
    browser's EventSource reconnects by itself (`retry`).
    """
    s = _services()
    bus = s.events
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    unsubscribe = bus.subscribe(lambda _e: loop.call_soon_threadsafe(wake.set))
    unhear = s.health.subscribe(lambda _down: loop.call_soon_threadsafe(wake.set))

    def now() -> dict:
        # `outage`: what is down now ("" for nothing), so a page drawn with another state reruns.
        return {
            "boot": bus.boot,
            "seq": bus.seq,
            "outage": s.health.state(),
            "problem": s.health.problem() or "",
        }

    def news(since: int) -> dict:
        # (boot, seq) and what happened since the last message, so a listener that cares
        # about a few tasks or one kit can tell whether this one concerns it.
        msg = now()
        msg["events"] = ev.described(bus.since(since))
        return msg

    async def stream():
        try:
            hello = now()
            sent = hello["seq"]
            yield "retry: 1000\n" + _sse("hello", hello)
            idle = 0.0
            while not getattr(_exiting, "should_exit", False):
                try:
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                except TimeoutError:
                    idle += 1.0
                    if idle >= _KEEPALIVE_S:
                        idle = 0.0
                        yield ": keep-alive\n\n"
                    continue
                await asyncio.sleep(_COALESCE_S)
                wake.clear()
                idle = 0.0
                msg = news(sent)
                sent = msg["seq"]
                yield _sse("change", msg)
        finally:
            unsubscribe()
            unhear()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


_view_cache: ev.ViewCache | None = None


def _views(s: core.Services) -> ev.ViewCache:
    """The view models' cache on this process's bus: pages told of one change share one build."""
    global _view_cache
    if _view_cache is None or _view_cache.bus is not s.events:
        _view_cache = ev.ViewCache(s.events)
    return _view_cache


def _json(view: dict) -> bytes:
    return json.dumps(view, ensure_ascii=False, separators=(",", ":")).encode()


async def queue_view(request: Request) -> Response:
    from components.queue import LIMIT
    from components.queue import queue_view as build

    try:
        limit = max(1, min(200, int(request.query_params.get("limit", LIMIT))))
    except ValueError:
        limit = LIMIT
    s = _services()
    body = await run_in_threadpool(
        _views(s).get,
        ("queue", limit),
        lambda: _json(build(s.store, s.events, limit, show_author=login_configured())),
    )
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


async def gallery_view(request: Request) -> Response:
    from components.gallery import WINDOW, parse_query
    from components.gallery import gallery_view as build

    q = request.query_params

    def number(name: str, default: int) -> int:
        try:
            return int(q.get(name, default))
        except ValueError:
            return default

    query = parse_query(q, q.getlist)
    s = _services()
    offset, limit = number("offset", 0), number("limit", WINDOW)
    body = await run_in_threadpool(
        _views(s).get,
        ("gallery", str(request.url.query), offset, limit),
        lambda: _json(build(s.store, s.events, query, offset, limit, show_author=login_configured())),
    )
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


@asynccontextmanager
async def lifespan(app):
    global _exiting
    # uvicorn's SIGTERM handler is its Server's bound method: our streams watch its should_exit.
    _exiting = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    try:
        _services()  # start the tracker with the server, not with the first page view
    except StartupError as exc:
        # One clear line on the command line; pages show the same text and retry on reload.
        print(f"Studio cannot start: {exc.message}", file=sys.stderr, flush=True)
    yield
    core.shutdown()


# Every route is behind the login when one is configured (`protect`) and
# answers 503 while a start-up problem lasts. Only endpoints HiAPI itself calls
# (authenticated their own way) may skip `protect`.
def _route(path: str, handler, *, methods: tuple[str, ...] = ("GET",), public: bool = False) -> Route:
    endpoint = _needs_services(handler)
    return Route(path, endpoint if public else protect(endpoint), methods=list(methods))


app = st.App(
    "app.py",
    lifespan=lifespan,
    routes=[
        _route(routes.HEALTH, health),
        _route(routes.IMAGE, _image_file("original")),
        _route(routes.THUMB, _image_file("thumb")),
        _route(routes.EXPORT, export),
        # HiAPI calls this one itself: it proves itself with the token and signature, not a login.
        _route(routes.CALLBACK, hiapi_callback, methods=("POST",), public=True),
        _route(routes.KIT, kit),
        # HiAPI fetches references itself: the signed, expiring URL is their key, not a login.
        _route(routes.REFERENCE, reference, public=True),
        _route(routes.EVENTS, events),
        _route(routes.QUEUE_VIEW, queue_view),
        _route(routes.GALLERY_VIEW, gallery_view),
    ],
)
