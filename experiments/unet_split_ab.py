"""The UNet's forward before and after its split into stem / encode / decode (for ControlNet):
the same output bit for bit, and the time of each, interleaved in one process.

    python3 experiments/unet_split_ab.py [REV]    # REV: a commit before the split (e270dbb)
"""

import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from t2i.models.unet import UNet, UNetConfig

rev = sys.argv[1] if len(sys.argv) > 1 else "e270dbb"
source = subprocess.run(["git", "show", f"{rev}:t2i/models/unet.py"], capture_output=True,
                        text=True, check=True).stdout  # fmt: skip
path = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
path.write(source)
path.close()
spec = importlib.util.spec_from_file_location("unet_old", path.name)
old = importlib.util.module_from_spec(spec)
sys.modules["unet_old"] = old
spec.loader.exec_module(old)
cfg = json.load(open("t2i/bundled/emoji/unet/config.json"))
cfg.pop("type")
new = UNet(UNetConfig(**cfg)).eval()
before = old.UNet(old.UNetConfig(**cfg)).eval()
before.load_state_dict(new.state_dict())
x, t, c = torch.randn(8, 4, 16, 16), torch.full((8,), 500.0), torch.randn(8, 20, 384)
with torch.no_grad():
    assert torch.equal(new(x, t, c), before(x, t, c))
    times = {"before": [], "after": []}
    for _ in range(15):
        for label, net in (("after", new), ("before", before)):
            start = time.perf_counter()
            net(x, t, c)
            times[label].append(time.perf_counter() - start)
b, a = (statistics.median(times[k]) for k in ("before", "after"))
print(f"emoji UNet batch 8 forward: before {b * 1e3:.1f} ms, after {a * 1e3:.1f} ms, {a / b:.3f}x")
