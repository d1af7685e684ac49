"""Web page and JSON HTTP API over the pipeline: `t2i serve`, or in Python:

    from t2i.server import ServerConfig, make_server
    server = make_server({"mine": t2i.load("runs/mine")}, ServerConfig(port=8000))
    server.serve_forever()

Names are imported on first use, so `t2i --help` (which imports t2i.server.cli) stays fast.
"""

import importlib

_EXPORTS = {
    "Limits": "t2i.server.api",
    "ServerConfig": "t2i.server.app",
    "T2IServer": "t2i.server.app",
    "make_server": "t2i.server.app",
    "serve": "t2i.server.app",
    "generate_batch": "t2i.server.batching",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 't2i.server' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
