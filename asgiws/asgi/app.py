"""Finding the application: import "module:attribute", call a factory, adapt ASGI 2 to ASGI 3."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from typing import Any, Callable, Dict, Union

ASGIApp = Callable[..., Any]

logger = logging.getLogger("asgiws.error")


class AppImportError(Exception):
    """The app could not be loaded. The message is one line, fit to print as the only output.

    When the failure came from inside the user's module (it raised while being imported), that
    exception is the `__cause__`, so its traceback can be shown too.
    """


def load_app(app: Union[str, ASGIApp, None], *, factory: bool = False, app_dir: str = ".",
             interface: str = "auto") -> ASGIApp:  # fmt: skip
    """The ASGI 3 callable for `app` (an import string or a callable).

    `factory`: call `app` with no arguments to get the app. Without it, a callable that takes no
    arguments (and is not a coroutine function) is taken as a factory all the same, with
    uvicorn's warning. `interface`: auto tells ASGI 3 from ASGI 2 by the signature.
    """
    if app is None:
        raise AppImportError("No application given: pass APP as module:attribute, e.g. asgiws asgiws.demo:app")
    if isinstance(app, str):
        app_dir = os.path.abspath(app_dir)
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)
        name = app
        loaded: ASGIApp = import_from_string(app)
        app = loaded
    else:
        name = getattr(app, "__qualname__", repr(app))

    if not factory and _looks_like_factory(app):
        logger.warning("ASGI app factory detected. Using it, but please consider setting the --factory flag explicitly.")
        factory = True
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise AppImportError(f"Calling the app factory {name} failed: {type(exc).__name__}: {exc}") from exc
    if not callable(app):
        raise AppImportError(f"{name} is not an ASGI application: {type(app).__name__} is not callable.")
    if interface == "asgi3" or (interface == "auto" and asgi_version(app) == 3):
        return app
    return ASGI2App(app)


def _looks_like_factory(app: Any) -> bool:
    """A function or class that takes no arguments: an app takes (scope, receive, send), or
    (scope) for ASGI 2.

    uvicorn calls APP and takes a TypeError to mean "not a factory"; judging by the signature
    instead never calls an app that is not one.
    """
    if not (inspect.isfunction(app) or inspect.ismethod(app) or inspect.isclass(app)):
        return False
    if inspect.iscoroutinefunction(app):
        return False
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   for p in parameters)  # fmt: skip


def import_from_string(import_str: str) -> Any:
    """`pkg.module:attr.sub` → the object. Raises AppImportError with a one-line message."""
    module_name, _, attrs = import_str.partition(":")
    if not module_name or not attrs:
        raise AppImportError(f'Import string "{import_str}" must be in the form "<module>:<attribute>", e.g. myapp:app.')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Distinguish "the module is not there" from "the module imports something that is not".
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppImportError(f'Could not import module "{module_name}" (is --app-dir right?).') from None
        raise AppImportError(f'Importing module "{module_name}" failed: {exc}') from exc
    except Exception as exc:
        raise AppImportError(f'Importing module "{module_name}" failed: {type(exc).__name__}: {exc}') from exc

    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppImportError(f'Attribute "{attrs}" not found in module "{module_name}".') from None
    return obj


def asgi_version(app: ASGIApp) -> int:
    """3 for `app(scope, receive, send)` (a coroutine), 2 for `app(scope)` → `instance(receive, send)`.

    Decided from the callable's shape: an `async def` (function or `__call__`) is ASGI 3; otherwise
    the number of positional parameters tells (a class whose constructor takes `scope` alone is the
    classic ASGI 2 form). When in doubt, ASGI 3: it is what every current framework speaks.
    """
    if not inspect.isclass(app):
        call = app if inspect.isroutine(app) else getattr(app, "__call__", app)
        if inspect.iscoroutinefunction(call):
            return 3
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return 3
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return 2 if len(positional) == 1 else 3


class ASGI2App:
    """Runs an ASGI 2 app (`app(scope)` returns `instance(receive, send)`) as ASGI 3."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        instance = self.app(scope)
        await instance(receive, send)

    def __repr__(self) -> str:
        return f"ASGI2App({self.app!r})"


__all__ = ["AppImportError", "ASGI2App", "asgi_version", "import_from_string", "load_app"]
