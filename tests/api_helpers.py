"""A live management API for the tests: a real system, a real uvicorn on 127.0.0.1, an ephemeral port.

The server runs on a thread of the test process (so a test can also look at
the controller and the trace); ``spk serve`` itself is run as a process by
tests/test_ctl.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from spgs.control import Controller
from spgs.system import load_and_plan
from spk import MachineEvent, TraceWriter
from spk_tools.api import Token, Tokens, create_app
from spk_tools.api.app import Fleet
from spk_tools.api.auth import digest
from spk_tools.serve import KEEP_ALIVE, bind

ADMIN = "admin-secret-token-0001"
READER = "reader-secret-token-0002"
TOKENS = Tokens([Token("ops", "admin", digest(ADMIN)), Token("viewer", "read", digest(READER))])


def write_tokens_file(folder: Path) -> Path:
    """The file `spk serve --tokens` and `spk fleet --serve --tokens` read: ADMIN as ops, READER as viewer."""
    path = folder / "tokens.toml"
    path.write_text(
        f'[[token]]\nname = "ops"\nrole = "admin"\ntoken = "{ADMIN}"\n\n'
        f'[[token]]\nname = "viewer"\nrole = "read"\ntoken = "{READER}"\n',
        encoding="utf-8",
    )
    return path

#: Two partitions that never end (an endless compute loop: every window overruns, a health event each),
#: and one that boots the reference kernel and ends.
LIVE_CONFIG = """
[system]
name = "live"
memory = "16MiB"
max_ticks = 1_000_000_000

[[partition]]
name = "alpha"
image = "bench_compute"
memory = "256KiB"
window = 10_000

[[partition]]
name = "beta"
image = "bench_compute"
memory = "256KiB"
window = 20_000

[[partition]]
name = "gamma"
image = "refkernel"
apps = ["hello"]
memory = "1MiB"
window = 10_000
"""


@dataclass
class Live:
    url: str
    controller: Controller
    trace: Path

    def client(self, token: str | None = ADMIN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)

    def trace_events(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.trace.read_text().splitlines()]


@contextmanager
def live_server(
    tmp_path: Path, *, config: str | Path = LIVE_CONFIG, pace: float = 200.0, max_ticks: int = 1_000_000_000,
    fleet: Fleet | None = None,
) -> Iterator[Live]:  # fmt: skip
    """Boot ``config`` (text, or a description file) under a controller, serve its API; stop both on the way out."""
    if isinstance(config, Path):
        path = config
    else:
        path = tmp_path / "system.toml"
        path.write_text(config)
    loaded, plans = load_and_plan(path)
    trace = tmp_path / "trace.jsonl"
    stream = trace.open("w")
    writer = TraceWriter(stream)
    writer(MachineEvent(0, "-", "system", {"name": loaded.description.system.name}))
    controller = Controller.boot(loaded, plans, trace=writer, max_ticks=max_ticks, pace=pace,
                                 attestation_key=bytes(range(32)))  # fmt: skip
    app = create_app(controller, tokens=TOKENS, fleet=fleet)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                                          timeout_keep_alive=KEEP_ALIVE))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    controller.start()
    thread.start()
    try:
        for _ in range(1000):  # bounded: the server is up after a few event-loop turns
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", controller, trace)
    finally:
        server.should_exit = True
        thread.join(10)
        controller.close()
        sock.close()
        stream.close()


def signed_system(folder: Path, *, version: int = 2) -> Path:
    """A system whose ``alpha`` boots a signed kernel (security version ``version``, minimum 1), secure boot on.

    Returns the description; the vendor key is ``folder/keys/vendor.key``.
    """
    from spgs.images import build
    from spgs.trust import keygen, load_signing_key, sign_image

    keygen(folder / "keys", "vendor")
    (folder / "images").mkdir()
    kernel = folder / "images" / "kernel.bin"
    kernel.write_bytes(build([("kernel", "bench_compute")], folder)[("kernel", "bench_compute")])
    sign_image(kernel, load_signing_key(folder / "keys" / "vendor.key"), name="kernel", kind="kernel",
               partition="alpha", security_version=version)  # fmt: skip
    path = folder / "system.toml"
    path.write_text("""
[system]
name = "signed"
memory = "16MiB"
max_ticks = 1_000_000_000

[trust]
secure_boot = "enforce"
keys = ["keys/vendor.pub"]

[[partition]]
name = "alpha"
image = "images/kernel.bin"
memory = "256KiB"
window = 10_000
min_security_version = 1
""")
    return path


def signed_upload(folder: Path, source: str, *, partition: str = "alpha", version: int) -> dict[str, str]:
    """The JSON body uploading bundled kernel ``source`` signed for ``partition``'s kernel slot."""
    import base64

    from spgs.images import build
    from spgs.trust import load_signing_key, manifest_path, sign_image, signature_path

    upload = folder / f"upload-{source}-{partition}-{version}"
    upload.mkdir()
    image = upload / "kernel.bin"
    image.write_bytes(build([("kernel", source)], folder)[("kernel", source)])
    sign_image(image, load_signing_key(folder / "keys" / "vendor.key"), name="kernel", kind="kernel",
               partition=partition, security_version=version)  # fmt: skip

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {"kind": "kernel", "name": "kernel", "image": b64(image), "manifest": b64(manifest_path(image)),
            "signature": b64(signature_path(image))}  # fmt: skip
