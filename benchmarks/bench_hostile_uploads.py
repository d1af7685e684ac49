"""Peak memory of `t2i serve` under hostile uploads: what a server costs when clients send the
worst bodies it admits or must refuse, many at once.

The server runs as its own process with the bundled `shapes` model; the script reads the
server's peak resident memory (VmHWM, reset through /proc/PID/clear_refs before each kind of
attack) and prints, per kind, the statuses it answered, its resident memory before the attack
and the peak during it (MB), and the first error message.
Each kind is sent by `--clients` clients at once, `--rounds` times each:

- bomb:        a PNG whose header claims 13000x13000 (refused from the header, never decoded)
- jpeg_bomb:   the same as a JPEG header (65000x65000)
- side_2048:   a real 2048x2048 PNG of one colour (past the 1024-pixel side: refused by header)
- noise_1024:  a real 1024x1024 PNG of noise, 3 MB (decoded, saved, then refused by size)
- mask_bad:    a valid init with a mask that is not an image (the saved init is removed)
- junk_8mb:    8 MB of bytes that are not JSON
- nested_8mb:  an object whose prompt is 8 MB of '[' (JSON nested 8 million deep)
- over_limit:  a Content-Length past max_body (refused before the body is read)

    python3 benchmarks/bench_hostile_uploads.py                # about a minute on 2 cores
    python3 benchmarks/bench_hostile_uploads.py --clients 16 --rounds 2
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_header_only(width: int, height: int) -> bytes:
    """A baseline JPEG start (SOI, SOF0 claiming width x height) and nothing after it."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(
        bytes([i, 0x11, 0]) for i in (1, 2, 3)
    )
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def attacks() -> dict[str, bytes]:
    """Each kind of attack as the raw body it sends."""
    rng = np.random.default_rng(0)
    noise = png_of(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    flat = png_of(np.full((2048, 2048, 3), 90, np.uint8))
    small = png_of(np.full((32, 32, 3), 200, np.uint8))

    def job(**fields) -> bytes:
        return json.dumps({"prompt": "a red circle", "steps": 4, **fields}).encode()

    return {
        "bomb": job(init=b64(png_header_only(13000, 13000))),
        "jpeg_bomb": job(init=b64(jpeg_header_only(65000, 65000))),
        "side_2048": job(init=b64(flat)),
        "noise_1024": job(init=b64(noise)),
        "mask_bad": job(init=b64(small), mask=b64(b"not an image" * 1000)),
        "junk_8mb": bytes(rng.integers(0, 256, 8 * 2**20 - 1024, dtype=np.uint8)),
        "nested_8mb": b'{"prompt": ' + b"[" * (8 * 2**20 - 1024) + b"}",
        "over_limit": b"",  # the header claims more than max_body; nothing is sent
    }


def send(port: int, body: bytes, over_limit: bool) -> tuple[int, str]:
    """POST body to /api/jobs on a fresh connection; the HTTP status and the error."""
    length = 64 * 2**20 if over_limit else len(body)
    head = (
        f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head.encode() + body)
        except OSError:  # refused before the body was read (503, 413): read the answer anyway
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    if not data:
        return 0, "connection reset before an answer"
    head, _, answer = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(answer).get("error", "")


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0 and later)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, uploads: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": uploads}
    cmd = [sys.executable, "-m", "t2i", "serve", "--model", "shapes", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read().decode()) from None
            time.sleep(0.1)
    raise RuntimeError("the server did not start within 60 s")


def files_under(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="clients sending at once")
    ap.add_argument("--rounds", type=int, default=2, help="bodies each client sends per kind")
    args = ap.parse_args()
    bodies = attacks()
    port = free_port()
    with tempfile.TemporaryDirectory() as uploads:
        server = start_server(port, uploads)
        try:
            idle = memory_kb(server.pid, "VmRSS")
            print(f"server idle: {idle / 1024:.0f} MB resident; {args.clients} clients at once")
            print(f"{'attack':<11} {'body MB':>7} {'statuses':<9} {'before':>6} {'peak':>5}  error")
            for kind, body in bodies.items():
                before = memory_kb(server.pid, "VmRSS")
                reset_peak(server.pid)
                n = args.clients * args.rounds
                bodies_sent = [body] * n
                over = [kind == "over_limit"] * n
                with ThreadPoolExecutor(args.clients) as pool:
                    answers = list(pool.map(send, [port] * n, bodies_sent, over))
                peak = memory_kb(server.pid, "VmHWM")
                statuses = [status for status, _ in answers]
                counts = ", ".join(f"{s} x{statuses.count(s)}" for s in sorted(set(statuses)))
                mb = len(body) / 2**20
                row = f"{kind:<11} {mb:>7.2f} {counts:<9} {before / 1024:>6.0f} {peak / 1024:>5.0f}"
                print(f"{row}  {answers[0][1][:70]}")
            time.sleep(1)
            print(f"files left in the upload folder's parent: {files_under(uploads)}")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
