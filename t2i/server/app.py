"""`t2i serve`: the web page and the JSON API on one standard-library HTTP server.

    server = make_server({"shapes": t2i.load("shapes")}, ServerConfig(port=8000))
    server.serve_forever()

http.server (ThreadingHTTPServer) needs no dependency and no network: handler threads only parse
and wait, the JobQueue's single worker runs the pipeline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import shutil
import signal
import socket
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from t2i.a1111 import t2i_sampler
from t2i.guides.guide import describe, load_guide
from t2i.params import brief, check_seeds, read_png_request
from t2i.protocol import Generator
from t2i.samplers import SAMPLERS
from t2i.server import a1111_api
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
    token: str | None = None  # when set, /api/* needs "Authorization: Bearer <token>"
    read_timeout: float = 30.0  # seconds a client has to send its whole request (head + body)
    idle_timeout: float = 10.0  # seconds a client may pause while sending (a short body: 400)
    max_connections: int = 64  # connections handled at once; one more gets 503 + Retry-After
    lora_dir: str | None = None  # LoRAs loaded at start for the models they were made for
    embedding_dir: str | None = None  # textual-inversion words loaded at start, likewise
    guide_dir: str | None = None  # guide folders (t2i train guide) loaded at start, likewise
    body_budget: int = 32 * 2**20  # bytes of request bodies held at once; past it, 503
    max_parsing: int = 2  # bodies decoded at once (JSON, base64, images: ~4x a body's bytes)


class T2IServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: socketserver's 5 resets bursts of clients

    def __init__(self, pipes: dict[str, Generator], config: ServerConfig):
        if not pipes:
            raise ValueError("no models to serve: give --model NAME|DIR")
        if config.body_budget < config.limits.max_body:
            budget, most = config.body_budget, config.limits.max_body
            raise ValueError(f"body_budget {budget} is below max_body {most}: no body would fit")
        self.pipes, self.config = pipes, config
        self.a1111_model = next(iter(pipes))  # A1111's options: the model its API draws with
        if config.lora_dir:
            load_loras(pipes, config.lora_dir)
        if config.embedding_dir:
            for name, pipe in pipes.items():
                words, _ = pipe.load_embeddings(config.embedding_dir)
                print(f"{name}: learnt words {words}")
        if config.guide_dir:
            load_guides(pipes, config.guide_dir)
        for pipe in pipes.values():  # a model folder's controls, loaded before any request
            if "control" in pipe.supports.adapters:
                pipe.controls.names()
        self.queue = JobQueue(pipes, config.max_queue, config.max_batch, config.timeout)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="t2i-serve-"))  # init / mask images
        self.slots = threading.BoundedSemaphore(config.max_connections)
        self.parsing = threading.BoundedSemaphore(config.max_parsing)
        self.body_bytes, self.body_lock = 0, threading.Lock()
        try:
            super().__init__((config.host, config.port), Handler)
        except BaseException:
            self.queue.stop()
            shutil.rmtree(self.upload_dir, ignore_errors=True)
            raise

    def samplers(self) -> list[str]:
        """The samplers the served models take, sorted."""
        return sorted({name for pipe in self.pipes.values() for name in pipe.samplers})

    def size_multiples(self) -> dict[str, int]:
        """Each model's name and the multiple its image sides come in."""
        return {name: pipe.factor for name, pipe in self.pipes.items()}

    def process_request(self, request, client_address) -> None:
        """One thread per connection, at most max_connections at once: over the cap, a 503."""
        if not self.slots.acquire(blocking=False):
            body = json.dumps({"error": "too many connections", "retry_after": 1}).encode()
            head = "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            head += f"Retry-After: 1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            try:
                request.settimeout(1)
                request.sendall(head.encode() + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @contextlib.contextmanager
    def body_reserved(self, length: int):
        """Hold `length` bytes of the body budget while a body is read and decoded: memory is
        bounded by the budget, not by connections x max_body. Past the budget, a 503."""
        with self.body_lock:
            if self.body_bytes + length > self.config.body_budget:
                message = "the server is reading other uploads; try again"
                raise ApiError(503, message, {"Retry-After": "1"})
            self.body_bytes += length
        try:
            yield
        finally:
            with self.body_lock:
                self.body_bytes -= length

    def allowed_host(self, host: str) -> bool:
        """Host header check (against DNS rebinding): loopback names, the bound address, and
        when bound to every interface, IP literals and this machine's names."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if name in ("localhost", self.config.host.lower()):
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            wildcard = self.config.host in ("", "0.0.0.0", "::")
            return wildcard and name in (socket.gethostname().lower(), socket.getfqdn().lower())
        return ip.is_loopback or self.config.host in ("", "0.0.0.0", "::")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.queue.stop()
        shutil.rmtree(self.upload_dir, ignore_errors=True)


def controls_of(pipe: Generator) -> dict[str, dict]:
    """name -> {kind, arch, size} of each control loaded on a model (none where it takes none)."""
    if "control" not in pipe.supports.adapters:
        return {}
    loaded = pipe.controls.loaded
    return {
        name: {"kind": c.meta["kind"], "arch": c.meta["arch"], "size": c.config.image_size}
        for name, c in sorted(loaded.items())
    }


def load_loras(pipes: dict[str, Generator], folder: str) -> None:
    """Every LoRA of `folder` onto the models it was made for, before serving; then frozen."""
    if not Path(folder).is_dir():
        raise ValueError(f"--lora-dir {folder!r} is not a folder")
    for name, pipe in pipes.items():
        if "lora" in pipe.supports.adapters:
            loaded, skipped = pipe.loras.load_folder(folder)
            pipe.loras.frozen = True
            print(f"{name}: LoRAs {loaded}; {len(skipped)} in {folder} are for other models")


def load_guides(pipes: dict[str, Generator], folder: str) -> None:
    """Every guide folder inside `folder` onto the served models it was trained on (the same
    weights, by model hash), before serving."""
    if not Path(folder).is_dir():
        raise ValueError(f"--guide-dir {folder!r} is not a folder")
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        try:
            guide = load_guide(sub)
        except ValueError as err:
            print(f"skipped {sub}: {err}")
            continue
        fits = [
            name
            for name, pipe in pipes.items()
            if pipe.supports.guides and pipe.model_hash == guide.net.config.base_hash
        ]
        for name in fits:  # read once, put onto each model it was trained on
            pipes[name].guides.add(guide)
        print(f"guide {sub.name}: {'onto ' + ', '.join(fits) if fits else 'for no served model'}")


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
        "unknown_words": pipe.unknown_words(job.params),  # each became one unknown token
    }
    if job.preview and job.status in ("running", "cancelling"):
        out["preview_base64"] = base64.b64encode(job.preview).decode()
    if job.error:
        out["error"] = job.error
    if job.status == "done":
        out["seconds"] = round(job.seconds, 3)
        out["batch_images"] = job.batch_images
        out["images"] = [
            {"params": json.loads(p.to_json()), "png_base64": base64.b64encode(png).decode()}
            for p, png in job.images
        ]
    return out


ALLOW = "GET, POST"  # the methods the API answers at all; each path says its own in Allow


class Handler(BaseHTTPRequestHandler):
    server: T2IServer
    server_version = "t2i"

    def log_message(self, format: str, *args) -> None:  # no access log; counts: /api/health
        pass

    def setup(self) -> None:
        """A per-recv timeout (idle_timeout) and a whole-request deadline: a client sending one
        byte every few seconds is cut off when read_timeout has passed since it connected."""
        config = self.server.config
        self.timeout = min(config.idle_timeout, config.read_timeout)  # per recv
        super().setup()
        self._expired = False
        self._deadline = threading.Timer(config.read_timeout, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _cut_off(self) -> None:
        self._expired = True
        try:
            self.connection.shutdown(socket.SHUT_RD)  # a blocked read returns; we can still answer
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """http.server's own errors (bad request line, unknown method) as JSON, not HTML."""
        allow = ALLOW
        if code == 501:  # an unknown method: http.server's 501 is a 405 for this API
            allow = self._allow()
            code, message = 405, f"method {self.command!r} not allowed; use {allow}"
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # a garbled request line still gets a status line
        try:
            headers = {"Allow": allow} if code == 405 else {}
            self._json(code, {"error": message or HTTPStatus(code).phrase}, headers)
        except OSError:
            pass

    # ------------------------------------------------------------ routing

    def _routes(self, path: str) -> dict[str, Callable[[], None]] | None:
        """The methods `path` answers and their handlers; None for no such route."""
        fixed = {
            "/": {"GET": self._index},
            "/api/health": {"GET": self._health},
            "/api/models": {"GET": self._models},
            "/api/openapi.json": {
                "GET": lambda: self._json(
                    200,
                    openapi(
                        self.server.config.limits,
                        self.server.size_multiples(),
                        self.server.samplers(),
                        a1111_api.paths,
                    ),
                )
            },
            "/api/generate": {"POST": self._generate},
            "/api/jobs": {"POST": self._submit},
            "/api/png-info": {"POST": self._png_info},
            "/sdapi/v1/txt2img": {"POST": lambda: self._a1111_generate("txt2img")},
            "/sdapi/v1/img2img": {"POST": lambda: self._a1111_generate("img2img")},
            "/sdapi/v1/options": {"GET": self._a1111_options, "POST": self._a1111_set_options},
            "/sdapi/v1/interrupt": {"POST": self._a1111_interrupt},
            "/sdapi/v1/samplers": {"GET": self._a1111_samplers},
            "/sdapi/v1/sd-models": {"GET": self._a1111_models},
            "/sdapi/v1/progress": {"GET": self._a1111_progress},
            "/sdapi/v1/scripts": {"GET": lambda: self._json(200, {"txt2img": [], "img2img": []})},
        }
        if path in fixed:
            return fixed[path]
        if path.startswith("/api/jobs/"):
            tail = path.removeprefix("/api/jobs/")
            if tail.endswith("/cancel"):
                return {"POST": lambda: self._cancel(tail)}
            return {"GET": lambda: self._job(tail)}
        return None

    def _allow(self) -> str:
        """The Allow header of this request's path (every method of the API if unknown)."""
        methods = self._routes(self.path.split("?")[0])
        return ", ".join(methods) if methods else ALLOW

    def _dispatch(self) -> None:  # every method: each path says which it answers
        path = self.path.split("?")[0]
        try:
            if self._expired:
                seconds = self.server.config.read_timeout
                raise ApiError(408, f"request not received within {seconds:g} s")
            self._guard(path)
            methods = self._routes(path)
            if methods is None:
                raise ApiError(404, f"no route {self.command} {path}; see /api/openapi.json")
            if self.command not in methods:
                allow = ", ".join(methods)
                message = f"method {self.command} not allowed on {path}; use {allow}"
                raise ApiError(405, message, {"Allow": allow})
            if self.command == "GET":
                self._deadline.cancel()  # the request is read; POST cancels after its body
            methods[self.command]()
        except ApiError as err:
            self.close_connection = True
            self._json(err.status, {"error": str(err)}, err.headers)
        except QueueFull as err:
            headers = {"Retry-After": str(err.retry_after)}
            self._json(503, {"error": str(err), "retry_after": err.retry_after}, headers)
        except OSError:  # the client went away (or was cut off at its deadline)
            pass
        except Exception as err:  # a bug: say so to the client and the console, keep serving
            traceback.print_exc()
            self._json(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch
    do_TRACE = do_CONNECT = _dispatch

    def _guard(self, path: str) -> None:
        """Cross-site checks: Host (DNS rebinding), Origin (another site's page), the token."""
        host = self.headers.get("Host", "")
        if not self.server.allowed_host(host):
            raise ApiError(403, f"Host {host!r} is not served here; use {self.server.url}")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            raise ApiError(403, f"cross-origin request from {origin!r} refused")
        token = self.server.config.token
        if token and path.startswith(("/api/", "/sdapi/")) and path != "/api/health":
            sent = self.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                message = "send the server's token: Authorization: Bearer <token>"
                raise ApiError(401, message, {"WWW-Authenticate": "Bearer"})

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
                "cads_noise": pipe.defaults.get("cads_noise", 0.0),
                "image_size": pipe.image_size,
                "size_multiple": pipe.factor,
                "loras": sorted(pipe.loras.loaded) if "lora" in pipe.supports.adapters else [],
                "embeddings": pipe.words_loaded,  # learnt words a prompt may use
                "guides": {g: describe(guide) for g, guide in pipe.guides.loaded.items()},
                "controls": controls_of(pipe),
            }
            for name, pipe in self.server.pipes.items()
        ]
        limits = asdict(self.server.config.limits)
        self._json(200, {"models": models, "samplers": sorted(SAMPLERS), "limits": limits})

    def _content_length(self) -> int:
        """The body's length, framed by exactly one Content-Length of ASCII digits."""
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, f"send Content-Type: application/json, got {ctype!r}")
        if self.headers.get("Transfer-Encoding") is not None:
            raise ApiError(411, "Transfer-Encoding is not supported: send a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise ApiError(411, "send a Content-Length header with the JSON body")
        if len(lengths) > 1:
            raise ApiError(400, f"{len(lengths)} Content-Length headers; send one")
        length = lengths[0].strip()
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, f"Content-Length must be a non-negative integer, got {length!r}")
        limits = self.server.config.limits
        if len(length) > 12 or int(length) > limits.max_body:
            raise ApiError(413, body_too_large(int(length[:13]), limits))
        return int(length)

    def _body(self, length: int) -> bytes:
        body = self._read(length)
        if len(body) < length:
            raise ApiError(400, f"body ended after {len(body)} of {length} bytes")
        self._deadline.cancel()
        return body

    def _read(self, n: int) -> bytes:
        """Up to n bytes: fewer when the client closes, pauses past idle_timeout or runs out of
        time."""
        chunks, got = [], 0
        while got < n:
            try:
                chunk = self.rfile.read1(min(n - got, 2**16))
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read_job(self) -> Job:
        """Read, check and queue a generation."""
        return self._queue([self._parse_job()])[0]

    def _queue(self, jobs: list[Job]) -> list[Job]:
        """Submit jobs in order; a full queue cancels them all (their uploads go with them)."""
        try:
            for job in jobs:
                self.server.queue.submit(job)
        except QueueFull:
            for job in jobs:
                self.server.queue.cancel(job, "queue full")
                if not job.done.is_set():
                    job.finish("cancelled", "queue full")
            raise
        return jobs

    def _parse_job(self, translate=None) -> Job:
        """Read and check a generation (not yet queued); `translate` turns another API's body
        into t2i's first (A1111's)."""
        limits, server = self.server.config.limits, self.server
        length = self._content_length()
        with server.body_reserved(length):
            body = self._body(length)
            with server.parsing:
                data = read_json(body, limits)
                if translate is not None:
                    data = translate(data)
                req = parse_generate(data, server.pipes, limits, server.upload_dir)
            del body, data
        return Job(req.model, req.params, req.n, req.format, uploads=req.uploads)

    def _submit(self) -> None:
        job = self._read_job()
        self._json(202, {"id": job.id, "status_url": f"/api/jobs/{job.id}"})

    def _finished(self, job: Job) -> Job:
        """Wait for a job; a failed, cancelled or timed-out one is an ApiError."""
        queue = self.server.queue
        if not job.done.wait(queue.timeout + 5):  # the worker enforces the timeout; 5 s grace
            queue.cancel(job, "timeout")
        if job.status != "done":
            status = 504 if "timeout" in job.error else 500
            raise ApiError(status, f"generation {job.status}: {job.error}")
        return job

    def _generate(self) -> None:
        job = self._finished(self._read_job())
        queue = self.server.queue
        if job.format == "png":
            params, png = job.images[0]
            self._send(200, png, "image/png", {"X-T2I-Params": params.to_json()})
        else:
            self._json(200, job_json(job, queue, self.server.pipes[job.model]))

    def _cancel(self, tail: str) -> None:
        """POST /api/jobs/<id>/cancel: a queued job leaves the queue, a running one stops at
        its next step (with the jobs batched with it only if they are cancelled too)."""
        job_id, _, action = tail.partition("/")
        job = self.server.queue.get(job_id)
        if action != "cancel" or job is None:
            raise ApiError(404, f"no route POST /api/jobs/{brief(tail)}; use /api/jobs/<id>/cancel")
        self._deadline.cancel()
        self.server.queue.cancel(job, "cancelled")
        self._json(200, {"id": job.id, "status": job.status})

    def _png_info(self) -> None:
        """POST {"image": base64 PNG}: the request its parameters make (t2i's JSON chunk, or
        A1111's "parameters" text), in t2i's field names."""
        limits = self.server.config.limits
        data = read_json(self._body(self._content_length()), limits)
        text = data.get("image")
        if not isinstance(text, str):
            raise ApiError(400, 'send {"image": a base64 PNG}')
        try:
            raw = base64.b64decode(text.split(",", 1)[-1], validate=True)
            request = read_png_request(raw, "image")
        except (ValueError, binascii.Error) as err:
            raise ApiError(400, str(err)) from err
        if "size" in request:
            request["width"], request["height"] = request.pop("size")
        if "sampler" in request:
            request["sampler"] = t2i_sampler(request["sampler"])
        # recorded with hashes: the page shows them, it does not send them
        keep = {"embeddings", "loras", "guides", "controls"}
        self._json(200, {k: v for k, v in request.items() if k not in keep})

    def _job(self, job_id: str) -> None:
        job = self.server.queue.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (finished jobs are kept for a while only)")
        self._json(200, job_json(job, self.server.queue, self.server.pipes[job.model]))

    # ------------------------------------------------------------ A1111's API

    def _a1111_generate(self, kind: str) -> None:
        seen: dict = {}

        def translate(data: dict) -> dict:
            limits, model = self.server.config.limits, self.server.a1111_model
            request, ignored, iterations = a1111_api.to_request(data, kind, model, limits)
            seen.update(echo={k: v for k, v in data.items() if k not in ("init_images", "mask")})
            seen.update(ignored=ignored, iterations=iterations)
            return request

        first = self._parse_job(translate)
        jobs = [first]
        try:  # A1111's n_iter: batches one after another, seeds going on from the first's
            for k in range(1, seen["iterations"]):
                params = replace(first.params, seed=first.params.seed + k * first.n)
                check_seeds(params, first.n, None)
                jobs.append(Job(first.model, params, first.n, first.format))
        except ValueError as err:
            first.finish("cancelled", str(err))  # removes its uploads
            raise ApiError(400, str(err)) from err
        jobs[-1].uploads, first.uploads = first.uploads, jobs[-1].uploads  # kept to the last
        images, interrupted = self._a1111_images(self._queue(jobs))
        digest = self.server.pipes[first.model].model_hash
        answer = a1111_api.reply(
            first.params, images, seen["echo"], seen["ignored"], digest, interrupted
        )
        self._json(200, answer)

    def _a1111_images(self, jobs: list[Job]) -> tuple[list, bool]:
        """Each batch's images in turn; after an interrupt, the running batch's latest preview
        and none of the batches left (A1111's answer to /interrupt)."""
        images: list = []
        for k, job in enumerate(jobs):
            try:
                images += self._finished(job).images
            except ApiError:
                for later in jobs[k + 1 :]:
                    self.server.queue.cancel(later, job.error or "cancelled")
                if job.error != "interrupted":
                    raise
                if job.preview:
                    images.append((job.params, job.preview))
                return images, True
        return images, False

    def _a1111_samplers(self) -> None:
        self._json(200, a1111_api.samplers(self.server.samplers()))

    def _a1111_models(self) -> None:
        models = [
            {
                "title": name,
                "model_name": name,
                "hash": pipe.model_hash,
                "sha256": None,
                "filename": name,
                "config": None,
            }
            for name, pipe in self.server.pipes.items()
        ]
        self._json(200, models)

    def _a1111_options(self) -> None:
        self._json(200, {"sd_model_checkpoint": self.server.a1111_model})

    def _a1111_set_options(self) -> None:
        data = read_json(self._body(self._content_length()), self.server.config.limits)
        unknown = sorted(set(data) - {"sd_model_checkpoint"})
        if unknown:
            raise ApiError(400, f"options {unknown} have no counterpart in t2i")
        model = data.get("sd_model_checkpoint", self.server.a1111_model)
        if not isinstance(model, str) or model not in self.server.pipes:
            loaded = sorted(self.server.pipes)
            raise ApiError(400, f"unknown model {brief(model)}; this server loaded {loaded}")
        self.server.a1111_model = model
        self._json(200, {})

    def _a1111_progress(self) -> None:
        running = self.server.queue.running()
        job = running[0] if running else None
        steps = self.server.pipes[job.model].total_steps(job.params) if job else 0
        state = {
            "job_count": len(running) + self.server.queue.stats()["queued"],
            "sampling_step": job.step if job else 0,
            "sampling_steps": steps,
            "interrupted": bool(job and job.status == "cancelling"),
        }
        progress = job.step / steps if job and steps else 0.0
        body = {"progress": progress, "eta_relative": 0.0, "state": state, "current_image": None}
        self._json(200, {**body, "textinfo": None})

    def _a1111_interrupt(self) -> None:
        self._deadline.cancel()
        for job in self.server.queue.running():
            self.server.queue.cancel(job, "interrupted")
        self._json(200, {})

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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve(pipes: dict[str, Generator], config: ServerConfig) -> None:
    """Serve until Ctrl-C or SIGTERM; either way the upload folder is removed."""
    try:
        server = make_server(pipes, config)
    except OSError as err:  # a busy port, an address not on this machine
        raise ValueError(f"cannot serve on {config.host}:{config.port}: {err.strerror}") from err
    # both signals handled here, whatever was inherited: a process started in the background by
    # a shell (or by a parent that ignores Ctrl-C) begins with SIGINT ignored
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:  # the handlers are in place before "serving" is said: a signal right after it is caught
        print(f"t2i serving {list(pipes)} at {server.url}  (API: {server.url}/api/openapi.json)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
