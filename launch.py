"""`python -m launch [streamlit run options]`: the studio's server, refusing before it listens.

`streamlit run server.py` binds its port first and imports server.py only
afterwards, so server.py's start-up refusals (a real key on an exposed address,
a data folder another studio holds) came while the socket was already accepting
connections. This is `streamlit run server.py` in-process with one change: the
app module is imported, and its refusals run, just before Streamlit binds the
port (uvicorn later finds the module already imported). `make run` uses it.
"""

from __future__ import annotations

import importlib
import sys

APP_SCRIPT = "server.py"


def _import_app_before_binding() -> None:
    from streamlit.web.server.starlette import starlette_server

    runner = starlette_server.UvicornRunner
    bind_and_serve = runner.run

    def run(self) -> None:
        if isinstance(self._app, str):  # "server:app", as Streamlit's app discovery found it
            importlib.import_module(self._app.partition(":")[0])  # may exit 2: nothing bound yet
        bind_and_serve(self)

    runner.run = run


def main(argv: list[str] | None = None) -> None:
    _import_app_before_binding()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", APP_SCRIPT, *(sys.argv[1:] if argv is None else argv)]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
