"""The layer contracts, read from the source with `ast` (nothing is imported or run).

    app_pages  →  components  →  studio (use cases, repositories, adapters)
    server.py, access  →  studio

Each arrow points the only way imports may go. Every import counts, also the
ones inside functions, since a lazy import is still a dependency. What each
contract protects:
- the core (`studio/`) never imports streamlit or anything above it, so it runs
  and is tested without a page (the tracker, the soak, the simulator);
- widgets (`components/`) never import a page, so a page is only composition;
- the HiAPI SDK (`studio.hiapi`: client, transport, errors, models, webhooks,
  and the old-path shims re-exporting them) reaches nothing of the studio but
  its request validation, even indirectly, so it could be lifted into a
  package of its own; the callback receiver (`studio.callbacks`) reaches no
  store, tracker or page;
- the route check (`access.routes`) never imports the page gate or widgets.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.support import ROOT

#: The HiAPI SDK: HiAPI's vocabulary, transport and webhooks, knowing nothing of the studio.
HIAPI_PACKAGE = "studio.hiapi"
#: Old import paths of the SDK's modules, kept as re-exports: they count as the package.
HIAPI_SHIMS = ("studio.client", "studio.transport", "studio.errors", "studio.models")
#: The only studio modules the SDK may use: the one request-validation function and its ratio table.
HIAPI_SHARED = ("studio.validation", "studio.ratios")
#: What the client may not reach, directly or through another studio module.
STUDIO_SPECIFIC = (
    "studio.store",
    "studio.records",
    "studio.tracker",
    "studio.services",
    "studio.campaign_store",
    "studio.library",
    "studio.trash",
    "studio.drafts",
    "studio.startup",
    "studio.config",
    "components",
    "app_pages",
    "streamlit",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The absolute names an `import`-from statement in `module` brings in."""
    if node.level == 0:
        base = node.module or ""
    else:
        package = module.split(".")
        package = package if is_package else package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    if node.module is None:  # `from . import x`: x is a module of the package
        return [f"{base}.{a.name}" for a in node.names]
    return [base]


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every module `path` imports, anywhere in the file, as absolute dotted names."""
    tree = ast.parse(path.read_text(), str(path))
    me, is_package = module_name(path), path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(me, node, is_package))
    return frozenset(found)


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def under(name: str, prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def breaches(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module_name(path)} imports {name}"
        for path in sources(folder)
        for name in sorted(imports_of(path))
        if under(name, forbidden)
    ]


def test_the_import_reader_resolves_relative_and_lazy_imports():
    """The reader itself: a reader that found nothing would pass every contract."""
    pkg = ROOT / "studio" / "hiapi"
    names = imports_of(pkg / "client.py")
    assert "studio.hiapi.errors" in names and "studio.hiapi.transport" in names and "httpx" in names
    models = imports_of(pkg / "models.py")
    assert "studio.validation" in models  # imported inside a method, two levels up
    node = ast.parse("from . import store").body[0]
    assert _resolve("studio.simulator", node, True) == ["studio.simulator.store"]
    assert _resolve("studio.simulator.server", ast.parse("from ..x import y").body[0], False) == ["studio.x"]


def test_the_core_never_imports_streamlit_or_the_layers_above():
    assert (
        breaches("studio", ("streamlit", "components", "app_pages", "server", "access", "app", "tools")) == []
    )


def test_widgets_never_import_a_page():
    assert breaches("components", ("app_pages", "app", "server")) == []


def test_the_route_check_never_imports_the_page_gate_or_widgets():
    found = [n for n in imports_of(ROOT / "access" / "routes.py") if under(n, ("access.page", "components"))]
    assert found == []


def _studio_closure(start: str) -> dict[str, str]:
    """Every studio module reachable from `start`, with the module that first imports it."""
    files = {module_name(p): p for p in sources("studio")}
    seen: dict[str, str] = {start: start}
    todo = [start]
    while todo:
        here = todo.pop()
        for name in imports_of(files[here]):
            # `from .store import X` names studio.store; `from . import store` names it too.
            target = name if name in files else name.rsplit(".", 1)[0]
            if name.startswith(("components", "app_pages", "streamlit")):
                seen.setdefault(name, here)
            elif target in files and target not in seen:
                seen[target] = here
                todo.append(target)
    return seen


def hiapi_modules() -> list[str]:
    """The SDK's modules and the shims at their old paths."""
    found = [module_name(p) for p in sources("studio/hiapi")]
    assert HIAPI_PACKAGE in found and f"{HIAPI_PACKAGE}.webhooks" in found  # the package was read
    return sorted(found) + list(HIAPI_SHIMS)


@pytest.mark.parametrize("module", [*hiapi_modules(), "studio.callbacks"])
def test_the_hiapi_client_reaches_nothing_studio_specific(module):
    reached = _studio_closure(module)
    bad = {name: via for name, via in reached.items() if under(name, STUDIO_SPECIFIC)}
    assert bad == {}, f"{module} reaches studio-specific modules (module: imported by): {bad}"


@pytest.mark.parametrize("module", hiapi_modules())
def test_the_hiapi_sdk_reaches_only_itself_and_the_request_validation(module):
    reached = _studio_closure(module)
    allowed = (HIAPI_PACKAGE, *HIAPI_SHIMS, *HIAPI_SHARED)
    bad = {
        name: via for name, via in reached.items() if under(name, ("studio",)) and not under(name, allowed)
    }
    assert bad == {}, f"{module} reaches studio modules outside the SDK (module: imported by): {bad}"


@pytest.mark.parametrize("shim", HIAPI_SHIMS)
def test_the_old_hiapi_paths_only_re_export_the_package(shim):
    names = imports_of(ROOT / "studio" / f"{shim.rsplit('.', 1)[1]}.py")
    assert names and all(under(n, (HIAPI_PACKAGE, "__future__")) for n in names), sorted(names)


#: What every route of the studio's own server starts with (`studio/routes.py`).
ROUTE_MARKERS = ("/images/", "/thumbs/", "/exports/", "/kits/", "/refs/", "/api/", "/hiapi/callback")
#: The only files that may spell a route path: the module that builds them and the server mounting them.
ROUTE_OWNERS = ("studio/routes.py", "server.py")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def route_literals(path: Path) -> list[str]:
    """String literals in code (not docstrings, not comments) that spell a route path."""
    if path.suffix == ".py":
        tree = ast.parse(path.read_text(), str(path))
        skip = _docstrings(tree)
        texts = [
            (node.lineno, node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        ]
    else:  # JavaScript / HTML: every line but // comments
        texts = [(n, line.split("//", 1)[0]) for n, line in enumerate(path.read_text().splitlines(), 1)]
    return [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:80]!r}"
        for line, text in texts
        if any(marker in text for marker in ROUTE_MARKERS)
    ]


def test_route_paths_are_spelled_only_in_the_routes_module():
    files = [
        p
        for folder in ("studio", "components", "app_pages", "access")
        for p in sorted((ROOT / folder).rglob("*"))
        if p.suffix in (".py", ".js", ".html")
    ]
    files += [ROOT / "app.py", ROOT / "launch.py", ROOT / "server.py"]
    assert any(route_literals(ROOT / owner) for owner in ROUTE_OWNERS)  # the reader finds them where they are
    found = [hit for p in files if str(p.relative_to(ROOT)) not in ROUTE_OWNERS for hit in route_literals(p)]
    assert found == []


def test_only_the_adapters_import_the_team_drivers():
    """psycopg lives in studio/postgres/, boto3 and botocore in studio/blobstores/: nothing else
    opens a PostgreSQL connection or talks to S3, and a single-user studio never loads them."""
    allowed = {"psycopg": "studio.postgres", "psycopg_pool": "studio.postgres", "boto3": "studio.blobstores",
               "botocore": "studio.blobstores"}  # fmt: skip
    found = [
        f"{module_name(path)} imports {name}"
        for folder in ("studio", "components", "app_pages", "access")
        for path in sources(folder)
        for name in sorted(imports_of(path))
        if (driver := under(name, tuple(allowed))) and not under(module_name(path), (allowed[driver],))
    ]
    assert found == []


# ---------------------------------------------------------------------- persistence

#: The database adapters: the only packages that may open a connection or write SQL.
ADAPTERS = ("studio.sqlite", "studio.postgres")
#: Old import paths kept as re-exports of the adapter.
SHIMS = ("studio.store",)
#: SQL as it would be written in a string: a statement's verb and its object.
SQL = re.compile(
    r"\bSELECT\b.+\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(TABLE|INDEX|TRIGGER|VIRTUAL\s+TABLE)\b|\bDROP\s+TABLE\b|\bALTER\s+TABLE\b|\bPRAGMA\s+\w+",
    re.IGNORECASE | re.DOTALL,
)
#: Everything that runs in the studio (tests, tools and benchmarks look at the file from outside).
APP_CODE = ("studio", "components", "app_pages", "access")
APP_FILES = ("server.py", "app.py", "launch.py")


def app_sources() -> list[Path]:
    return [p for folder in APP_CODE for p in sources(folder)] + [
        ROOT / f for f in APP_FILES if (ROOT / f).exists()
    ]


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal in `path` but docstrings (f-strings by their constant parts), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else " x " for v in node.values)
            found.append((node.lineno, text))
    return found


def test_the_sql_pattern_finds_sql_and_only_sql():
    """The detector itself: one that matched nothing would pass the contract below."""
    for sql in (
        "SELECT id FROM outputs WHERE state = 'kept'",
        "INSERT OR IGNORE INTO spend (a) VALUES (?)",
        "UPDATE campaigns SET state = ?",
        "DELETE FROM drafts WHERE updated_at < ?",
        "CREATE TABLE IF NOT EXISTS x (a)",
        "PRAGMA user_version",
    ):
        assert SQL.search(sql), sql
    for prose in (
        "Select the images to delete.",
        "Update the settings",
        "Created from a template",
        "selected",
    ):
        assert not SQL.search(prose), prose
    assert any(SQL.search(text) for _, text in _strings(ROOT / "studio" / "sqlite" / "campaigns.py"))


def test_no_module_outside_a_database_adapter_opens_a_connection_or_writes_sql():
    found = []
    for path in app_sources():
        name = module_name(path)
        if under(name, ADAPTERS):
            continue
        found += [
            f"{name} imports {m}"
            for m in sorted(imports_of(path))
            if under(m, ("sqlite3", "psycopg", "sqlalchemy"))
        ]
        found += [f"{name}:{line} has SQL {text[:60]!r}" for line, text in _strings(path) if SQL.search(text)]
    assert found == []


def test_no_connection_crosses_the_repository_seam():
    """The Protocols speak records and plain types: the seam module imports no driver or adapter."""
    names = imports_of(ROOT / "studio" / "repositories.py")
    assert not [n for n in names if under(n, (*ADAPTERS, *SHIMS, "sqlite3"))]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def studio_import_graph() -> dict[str, set[str]]:
    """studio module -> the studio modules it imports (packages as their `__init__`).

    Old-path shims stay in: a module importing `studio.store` depends on the adapter behind it.
    """
    files = {module_name(p): p for p in sources("studio")}
    graph: dict[str, set[str]] = {}
    for me, path in files.items():
        targets = set()
        for name in imports_of(path):
            target = name if name in files else name.rsplit(".", 1)[0]
            if target in files and target != me:
                targets.add(target)
        graph[me] = targets
    return graph


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_studio_modules():
    graph = studio_import_graph()
    assert "studio.sqlite.store" in graph and graph["studio.sqlite.store"]  # the graph was read
    assert _cycles(graph) == []


# -- widgets and pages change nothing themselves: they call the use cases -------------

#: Receivers (the last name before the call) whose write methods only `studio.usecases` may call.
WRITES_BY_RECEIVER: dict[str, frozenset[str]] = {
    "tracker": frozenset(
        {"submit", "submit_campaign", "launch_campaign", "follow", "set_max_active", "ingest_callback"}
    ),
    "intake": frozenset(
        {"submit", "submit_campaign", "launch_campaign", "set_max_active", "ingest_callback"}
    ),
    "trash": frozenset({"delete", "undo", "sweep"}),
    "kits": frozenset({"start"}),
    "references": frozenset({"add"}),  # the reference shelf
    "shelf": frozenset({"add"}),
    "keeper": frozenset({"fetch", "keep_bytes", "delete"}),
    "blobs": frozenset({"put", "delete"}),
}
#: Store and campaign-book methods that write, by prefix (add_click, set_setting, record_spend, …).
STORE_RECEIVERS = frozenset({"store", "book", "campaigns"})
STORE_WRITE_PREFIXES = (
    "add_",
    "set_",
    "delete_",
    "record_",
    "mark_",
    "trash_",
    "restore_",
    "purge_",
    "update_",
    "launch_",
    "insert_",
    "cancel",
)
#: Core functions that write, which a widget or page may not import (the use cases wrap them).
WRITING_FUNCTIONS = {
    "studio.pricing": {"save", "reset"},
    "studio.output_storage": {"set_persistent"},
    "studio.export": {"write_zip", "write_campaign_zip"},
    "studio.kit": {"write_kit"},
    "studio.store": {"insert_submission", "click_keys"},
    "studio.sqlite.store": {"insert_submission", "click_keys"},
}


def _receiver(node: ast.expr) -> str | None:
    """The name a method is called on: `services.store.x()` → store, `book().x()` → book."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _receiver(node.func)
    return None


def direct_writes(source: str, module: str = "components.x") -> list[str]:
    """Every store/tracker/trash/shelf/kit write a module's source makes itself, as `receiver.method`.

    Reads (`store.gallery_items`, `trash.pending`, `kits.status`) and the
    tracker's campaign controls (pause, resume, cancel) are not writes here.
    """
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, on = node.func.attr, _receiver(node.func.value)
            if on is None:
                continue
            if method in WRITES_BY_RECEIVER.get(on, ()) or (
                on in STORE_RECEIVERS and method.startswith(STORE_WRITE_PREFIXES)
            ):
                found.append(f"{module}:{node.lineno} {on}.{method}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            banned = WRITING_FUNCTIONS.get(node.module or "", set())
            found += [
                f"{module}:{node.lineno} imports {node.module}.{a.name}"
                for a in node.names
                if a.name in banned
            ]
    return found


def test_the_write_finder_sees_each_kind_of_direct_write():
    """The finder itself: one that found nothing would pass the contract below."""
    source = (
        "from studio.pricing import save as save_pricing\n"
        "services.tracker.submit(reqs, click_token=t)\n"
        "services.intake.set_max_active(3)\n"
        "get_services().store.add_collection('x')\n"
        "services.store.set_setting('k', 'v')\n"
        "book().update_row(1, 2, {}, 'p')\n"
        "services.trash.delete([1])\n"
        "store.record_spend([1], resolution='1K', unit_micros=1, currency='USD')\n"
        "services.store.gallery_items([1])\n"  # a read: allowed
        "sel.add(3)\n"  # not a store: allowed
    )
    found = sorted(f.split(" ", 1)[1] for f in direct_writes(source))
    assert found == sorted(
        [
            "imports studio.pricing.save",
            "tracker.submit",
            "intake.set_max_active",
            "store.add_collection",
            "store.set_setting",
            "book.update_row",
            "trash.delete",
            "store.record_spend",
        ]
    )


def test_widgets_and_pages_write_only_through_the_use_cases():
    found = [
        hit
        for folder in ("components", "app_pages")
        for path in sources(folder)
        for hit in direct_writes(path.read_text(), module_name(path))
    ]
    assert found == [], "call a function of studio.usecases instead:\n" + "\n".join(found)


def test_the_use_cases_never_import_streamlit_or_a_widget():
    cases = [p for p in sources("studio") if module_name(p).startswith("studio.usecases")]
    assert cases, "studio/usecases is missing"
    bad = [
        f"{module_name(p)} imports {n}"
        for p in cases
        for n in sorted(imports_of(p))
        if under(n, ("streamlit", "components", "app_pages"))
    ]
    assert bad == []
