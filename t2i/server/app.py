"""`t2i serve`: the web page and the JSON API on one standard-library HTTP server.

    server = make_server({"shapes": t2i.load("shapes")}, ServerConfig(port=8000))
    server.serve_forever()

http.server (ThreadingHTTPServer) needs no dependency and no network: handler threads only parse
and wait, the JobQueue's single worker runs the pipeline.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from t2i.protocol import Generator
from t2i.samplers import SAMPLERS
from t2i.server.api import (
    ApiError,
    Limits,
    body_too_large,
    openapi,
    parse_generate,
    read_json,
)
from t2i.server.jobs import Job, JobQueue, QueueFull

INDEX_HTML = Path(__file__).parent / "static" / "index.html"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # loopback only unless asked: --host 0.0.0.0 to serve a network
    port: int = 8000  # 0 = any free port
    max_queue: int = 32  # waiting requests; one more gets 503 + Retry-After
    max_batch: int = 16  # images per sampler call; 1 = no batching
    timeout: float = 120.0  # seconds from submit to result
    limits: Limits = field(default_factory=Limits)


class T2IServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: socketserver's 5 resets bursts of clients

    def __init__(self, pipes: dict[str, Generator], config: ServerConfig):
        if not pipes:
            raise ValueError("no models to serve: give --model NAME|DIR")
        self.pipes, self.config = pipes, config
        self.queue = JobQueue(pipes, config.max_queue, config.max_batch, config.timeout)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="t2i-serve-"))  # init / mask images
        super().__init__((config.host, config.port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.queue.stop()
        shutil.rmtree(self.upload_dir, ignore_errors=True)


def make_server(pipes: dict[str, Generator], config: ServerConfig | None = None) -> T2IServer:
    """A bound server (not yet serving): call serve_forever(), or run it in a thread."""
    return T2IServer(pipes, config or ServerConfig())


def job_json(job: Job, queue: JobQueue, pipe: Generator) -> dict:
    """A job's state; `steps` counts every sampler step (a cascade's base stages run first)."""
    out = {
        "id": job.id,
        "status": job.status,
        "step": job.step,
        "steps": pipe.total_steps(job.params),
        "queue_position": queue.position(job),
    }
    if job.error:
        out["error"] = job.error
    if job.status == "done":
        out["seconds"] = round(job.seconds, 3)
        out["batch_images"] = job.batch_images
        out["images"] = [
            {"params": asdict(p), "png_base64": base64.b64encode(png).decode()}
            for p, png in job.images
        ]
    return out


class Handler(BaseHTTPRequestHandler):
    server: T2IServer
    timeout = 30  # seconds a client may take to send its request
    server_version = "t2i"

    def log_message(self, format: str, *args) -> None:  # no access log; counts: /api/health
        pass

    # ------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._dispatch(
            {
                "/": self._index,
                "/api/health": self._health,
                "/api/models": self._models,
                "/api/openapi.json": lambda: self._json(200, openapi(self.server.config.limits)),
            }
        )

    def do_POST(self) -> None:
        self._dispatch({"/api/generate": self._generate, "/api/jobs": self._submit})

    def _dispatch(self, routes: dict) -> None:
        path = self.path.split("?")[0]
        try:
            if path in routes:
                routes[path]()
            elif self.command == "GET" and path.startswith("/api/jobs/"):
                self._job(path.removeprefix("/api/jobs/"))
            else:
                raise ApiError(404, f"no route {self.command} {path}; see /api/openapi.json")
        except ApiError as err:
            self._json(err.status, {"error": str(err)})
        except QueueFull as err:
            headers = {"Retry-After": str(err.retry_after)}
            self._json(503, {"error": str(err), "retry_after": err.retry_after}, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as err:  # a bug: say so to the client and the console, keep serving
            traceback.print_exc()
            self._json(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    # ------------------------------------------------------------ endpoints

    def _index(self) -> None:
        self._send(200, INDEX_HTML.read_bytes(), "text/html; charset=utf-8")

    def _health(self) -> None:
        stats = self.server.queue.stats()
        self._json(200, {"status": "ok", "models": list(self.server.pipes), **stats})

    def _models(self) -> None:
        models = [
            {
                "name": name,
                "sampler": pipe.defaults["name"],
                "samplers": pipe.samplers,  # an autoregressive model has its own one
                "family": pipe.family,
                "supports": pipe.supports.to_json(),
                "steps": pipe.defaults["steps"],
                "guidance": pipe.defaults["guidance_scale"],
                "guidance_interval": pipe.defaults.get("guidance_interval"),
                "image_size": pipe.image_size,
                "size_multiple": pipe.factor,
            }
            for name, pipe in self.server.pipes.items()
        ]
        limits = asdict(self.server.config.limits)
        self._json(200, {"models": models, "samplers": sorted(SAMPLERS), "limits": limits})

    def _read_job(self) -> Job:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "send a Content-Length header with the JSON body")
        limits = self.server.config.limits
        if int(length) > limits.max_body:
            raise ApiError(413, body_too_large(int(length), limits))
        data = read_json(self.rfile.read(int(length)), limits)
        req = parse_generate(data, self.server.pipes, limits, self.server.upload_dir)
        job = Job(req.model, req.params, req.n, req.format, uploads=req.uploads)
        try:
            return self.server.queue.submit(job)
        except QueueFull:
            job.finish("cancelled", "queue full")  # removes its uploads
            raise

    def _submit(self) -> None:
        job = self._read_job()
        self._json(202, {"id": job.id, "status_url": f"/api/jobs/{job.id}"})

    def _generate(self) -> None:
        job = self._read_job()
        queue = self.server.queue
        if not job.done.wait(queue.timeout + 5):  # the worker enforces the timeout; 5 s grace
            queue.cancel(job, "timeout")
        if job.status != "done":
            status = 504 if "timeout" in job.error else 500
            raise ApiError(status, f"generation {job.status}: {job.error}")
        if job.format == "png":
            params, png = job.images[0]
            self._send(200, png, "image/png", {"X-T2I-Params": params.to_json()})
        else:
            self._json(200, job_json(job, queue, self.server.pipes[job.model]))

    def _job(self, job_id: str) -> None:
        job = self.server.queue.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (finished jobs are kept for a while only)")
        self._json(200, job_json(job, self.server.queue, self.server.pipes[job.model]))

    # ------------------------------------------------------------ responses

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def serve(pipes: dict[str, Generator], config: ServerConfig) -> None:
    """Serve until Ctrl-C."""
    server = make_server(pipes, config)
    print(f"t2i serving {list(pipes)} at {server.url}  (API: {server.url}/api/openapi.json)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
