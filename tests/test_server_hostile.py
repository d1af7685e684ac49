"""`t2i serve` against hostile and unlucky clients (issue 39), each finding reproduced on a real
loopback server: malformed framing, slow clients, too many connections, unsupported methods,
cross-site requests (Host, Origin, Content-Type, token), guessable job ids, the serve flags and
the upload folder on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from tiny_models import write_tiny_model

from t2i.cli import main
from t2i.families import load
from t2i.server import Limits, ServerConfig, make_server

READ_TIMEOUT = 1.5  # seconds a test server gives a client to send its request
IDLE_TIMEOUT = 1.0  # seconds it may pause while sending


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    vocab = "a red blue circle square above below".split()
    return write_tiny_model(tmp_path_factory.mktemp("model"), steps=2, vocab=vocab)


@pytest.fixture(scope="module")
def pipes(model_dir):
    return {"tiny": load(model_dir)}


class Served:
    """A server on a free loopback port; raw() speaks bytes to it."""

    def __init__(self, pipes, **config):
        limits = Limits(max_steps=4, max_n=2, max_side=64, max_prompt=200, max_body=1 << 20)
        timeouts = {"read_timeout": READ_TIMEOUT, "idle_timeout": IDLE_TIMEOUT}
        config = {**timeouts, "max_queue": 4, **config}
        self.server = make_server(pipes, ServerConfig(port=0, limits=limits, **config))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def raw(self, data: bytes, half_close: bool = False) -> tuple[int, dict, bytes]:
        """Send bytes as they are; (status, headers with lower-case names, body)."""
        with self.connect() as sock:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            return read_response(sock)

    def request(self, method, path, body=b"", headers=None) -> tuple[int, dict, bytes]:
        """A well-framed request with the given headers (Host and Content-Length added)."""
        headers = {"Host": self.host, "Content-Length": str(len(body)), **(headers or {})}
        head = f"{method} {path} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
        return self.raw(head.encode("latin-1") + b"\r\n" + body)

    def post(self, body: bytes, headers=None, path="/api/jobs"):
        return self.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def error(response) -> str:
    status, headers, body = response
    assert headers["content-type"] == "application/json", (status, body)
    return json.loads(body)["error"]


@pytest.fixture(scope="module")
def served(pipes):
    running = Served(pipes)
    yield running
    running.close()


def framed(length: bytes, body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return (
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + b"Content-Length: "
        + length
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def test_malformed_content_length_is_a_400_not_a_500(served):
    # '\xb2' (superscript two) is a digit to str.isdigit and int() but not an ASCII one
    for length in (b"\xb2", b"-5", b"1e3", b"0x10", b" "):
        status, _, _ = response = served.raw(framed(length))
        assert status == 400 and "Content-Length" in error(response), length
    status, _, _ = response = served.raw(framed(b"2", extra=b"Content-Length: 2\r\n"))
    assert status == 400 and "2 Content-Length headers" in error(response)
    response = served.raw(framed(b"9" * 40))
    assert response[0] == 413


def test_chunked_bodies_are_refused_with_411(served):
    req = (
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    status, _, _ = response = served.raw(req)
    assert status == 411 and "Transfer-Encoding" in error(response)


def test_a_body_shorter_than_its_length_is_a_prompt_400(served):
    start = time.monotonic()
    with served.connect() as sock:  # the client keeps its socket open and sends nothing more
        sock.sendall(framed(b"100", b'{"prompt": '))
        status, _, body = read_response(sock)
    assert status == 400 and b"body ended after 11 of 100 bytes" in body
    assert time.monotonic() - start < IDLE_TIMEOUT + 1
    status, _, _ = served.raw(framed(b"100", b'{"prompt": '), half_close=True)
    assert status == 400


def test_hostile_json_is_a_400(served):
    for body, message in [
        (b'{"prompt": "a", "seed": ' + b"9" * 5000 + b"}", "not valid JSON"),  # past the int limit
        (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "must be a JSON object"),
        (b'{"prompt": "\xff\xfe red"}', "not UTF-8"),
        (b'{"prompt": NaN}', "prompt"),
        (b"", "empty body"),
    ]:
        status, _, _ = response = served.post(body)
        assert status == 400 and message in error(response), body[:40]
    assert served.request("GET", "/api/health")[0] == 200


def test_an_error_does_not_echo_a_huge_value_back(served):
    for field, value in [("seed", 10**1000), ("prompt", 7 * 10**1000), ("format", "x" * 100_000)]:
        body = json.dumps({"prompt": "a red circle", field: value}).encode()
        status, _, _ = response = served.post(body)
        message = error(response)
        assert status == 400 and field in message and len(message) < 300, message[:400]


def test_a_slow_client_is_cut_off_at_the_request_deadline(served):
    """One byte every 0.4 s keeps every recv inside the socket timeout; the whole-request
    deadline still ends it (408) when READ_TIMEOUT has passed since it connected."""
    start = time.monotonic()
    with served.connect() as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(30):
                sock.sendall(b"X")
                time.sleep(0.4)
                if time.monotonic() - start > READ_TIMEOUT + 3:
                    break
        except OSError:  # the server cut the connection
            pass
        status, _, body = read_response(sock)
    assert status == 408 and b"not received within" in body
    assert time.monotonic() - start < READ_TIMEOUT + 2


def test_connections_over_the_cap_get_503_at_once(pipes):
    running = Served(pipes, max_connections=2)
    try:
        idle = [running.connect() for _ in range(2)]  # each holds a handler thread
        time.sleep(0.2)
        start = time.monotonic()
        status, headers, _ = response = running.request("GET", "/api/health")
        assert status == 503 and headers["retry-after"] == "1"
        assert "too many connections" in error(response)
        assert time.monotonic() - start < 1
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        assert running.request("GET", "/api/health")[0] == 200
    finally:
        running.close()


def test_bodies_held_at_once_are_bounded_by_the_budget(pipes):
    """Memory is bounded by body_budget, not by connections x max_body: while one client holds
    the whole budget with a body it is still sending, the next body gets 503 at once."""
    running = Served(pipes, body_budget=1 << 20)
    try:
        with running.connect() as slow:
            head = framed(str(1 << 20).encode()).removesuffix(b"{}")
            slow.sendall(head.replace(b"127.0.0.1", running.host.encode()) + b'{"prompt": ')
            time.sleep(0.2)  # its reservation is taken
            status, headers, _ = response = running.post(b'{"prompt": "a red circle"}')
            assert status == 503 and "reading other uploads" in error(response)
            assert headers["retry-after"] == "1"
        time.sleep(IDLE_TIMEOUT + 0.5)  # the slow one is cut off and its bytes released
        assert running.post(b'{"prompt": "a red circle", "steps": 1}')[0] == 202
    finally:
        running.close()
    with pytest.raises(ValueError, match="body_budget 1000 is below max_body"):
        Served(pipes, body_budget=1000)


def test_unsupported_methods_get_405_json_with_allow(served):
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "FOO"):
        status, headers, _ = response = served.request(method, "/api/jobs")
        assert status == 405 and headers["allow"] == "POST", method  # what /api/jobs takes
        assert "not allowed" in error(response)
    status, _, body = served.raw(b"GARBAGE\r\n\r\n")
    assert status == 400 and body.startswith(b'{"error"')


def test_host_origin_and_content_type_are_checked(served):
    body = json.dumps({"prompt": "a red circle", "steps": 1}).encode()
    for host in ("evil.example", f"evil.example:{served.port}", "127.0.0.1.evil.example"):
        status, _, _ = response = served.request("GET", "/api/models", headers={"Host": host})
        assert status == 403 and "not served here" in error(response)  # DNS rebinding
    for host in (served.host, f"localhost:{served.port}", f"[::1]:{served.port}"):
        assert served.request("GET", "/api/health", headers={"Host": host})[0] == 200
    status, _, _ = response = served.post(body, {"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in error(response)
    assert served.request("GET", "/api/models", headers={"Origin": "null"})[0] == 403
    assert served.post(body, {"Origin": f"http://{served.host}"})[0] == 202  # the page itself
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        status, _, _ = response = served.post(body, {"Content-Type": ctype})
        assert status == 415 and "application/json" in error(response)


def test_job_ids_are_unguessable(served):
    body = json.dumps({"prompt": "a red circle", "steps": 1}).encode()
    ids = [json.loads(served.post(body)[2])["id"] for _ in range(2)]
    assert ids[0] != ids[1] and all(len(i) >= 16 and not i.isdigit() for i in ids)
    assert served.request("GET", "/api/jobs/1")[0] == 404


def test_a_token_guards_the_api_but_not_the_page(pipes):
    running = Served(pipes, token="s3cret")
    try:
        status, headers, _ = response = running.request("GET", "/api/models")
        assert status == 401 and headers["www-authenticate"] == "Bearer" and error(response)
        wrong = {"Authorization": "Bearer nope"}
        assert running.request("GET", "/api/models", headers=wrong)[0] == 401
        good = {"Authorization": "Bearer s3cret"}
        assert running.request("GET", "/api/models", headers=good)[0] == 200
        body = json.dumps({"prompt": "a red circle", "steps": 1}).encode()
        assert running.post(body)[0] == 401 and running.post(body, good)[0] == 202
        page = running.request("GET", "/")
        assert page[0] == 200 and b"Bearer ${TOKEN}" in page[2]  # the page sends ?token=
        assert running.request("GET", "/api/health")[0] == 200
    finally:
        running.close()


def test_openapi_documents_every_error_the_server_gives(served):
    schema = json.loads(served.request("GET", "/api/openapi.json")[2])
    jobs = schema["paths"]["/api/jobs"]["post"]["responses"]
    assert {"400", "401", "403", "404", "405", "408", "411", "413", "415", "503"} <= set(jobs)
    assert {"500", "504"} <= set(schema["paths"]["/api/generate"]["post"]["responses"])
    assert "403" in schema["paths"]["/api/models"]["get"]["responses"]


def test_serve_flags_out_of_range_and_a_busy_port_exit_2(model_dir, capsys):
    for flags, message in [
        (["--port", "70000"], "--port must be in [0, 65535]"),
        (["--timeout", "nan"], "--timeout must be a positive"),
        (["--timeout", "-1"], "--timeout must be a positive"),
    ]:
        assert main(["serve", "--model", str(model_dir), *flags]) == 2
        assert message in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", "--model", str(model_dir), "--port", port]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job starts


@pytest.mark.parametrize(
    "sig,inherited",
    [(signal.SIGTERM, None), (signal.SIGINT, None), (signal.SIGINT, ignore_sigint)],
    ids=["sigterm", "sigint", "sigint-ignored-by-the-parent"],
)
def test_sigterm_and_sigint_remove_the_upload_folder(model_dir, tmp_path, sig, inherited):
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "t2i.cli", "serve", "--model", str(model_dir), "--port", "0"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=inherited
    )
    try:
        assert b"t2i serving" in proc.stdout.readline()
        assert len(list(tmp_path.glob("t2i-serve-*"))) == 1
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert not list(tmp_path.glob("t2i-serve-*"))
