"""The schema served at /api/openapi.json against the server itself, by a fuzzer no one here
wrote (schemathesis, bounded and seeded): every response documented, no server error, the right
405 and Allow for every method, nothing the schema forbids accepted, and everything it allows
accepted except an image field's contents (init, mask, init_images, png-info's image), which
JSON Schema cannot state as "a decodable PNG": those get a 400 naming the field."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest
from test_server import make_model

from t2i import load
from t2i.server import ServerConfig, make_server
from t2i.server.api import Limits

pytest.importorskip("schemathesis")  # a test dependency (pyproject's test extra)
IMAGE_FIELDS = "^/api/generate$|^/api/jobs$|^/api/png-info$|^/sdapi/v1/img2img$"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    limits = Limits(max_steps=8, max_n=2, max_side=32)
    pipe = load(make_model(tmp_path_factory.mktemp("model")))
    server = make_server({"tiny": pipe}, ServerConfig(port=0, limits=limits, timeout=20))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


def fuzz(url: str, folder, *args: str) -> subprocess.CompletedProcess:
    """schemathesis's CLI, run in `folder` (it keeps a .schemathesis cache where it runs)."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/openapi.json"]
    command += ["--max-examples", "15", "--seed", "0", "--workers", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder)


def test_schemathesis_finds_no_failure(url, tmp_path):
    every = fuzz(url, tmp_path, "--checks", "all", "--exclude-checks", "positive_data_acceptance")
    assert every.returncode == 0, every.stdout[-4000:]
    accepted = fuzz(
        url, tmp_path, "--checks", "positive_data_acceptance", "--exclude-path-regex", IMAGE_FIELDS
    )
    assert accepted.returncode == 0, accepted.stdout[-4000:]
    for run in (every, accepted):  # cases were made and every one passed
        generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert generated and int(generated[1]) == int(generated[2]) > 100, run.stdout[-800:]
