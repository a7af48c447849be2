"""Drive a real ComfyUI 0.3.75 server (installed by scripts/install_comfyui_host.sh under .host/): tests, demo.

Standard library only: the tests run in the project's .venv, the server in .host/venv (its own torch). Typical use::

    ensure_host()
    with ComfyServer() as server:
        assert not server.import_failed()
        prompt_id = server.queue(api_graph)
        entry = server.wait(prompt_id, timeout=600)

Only 127.0.0.1 is ever contacted. Every loop is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HOST_DIR = REPO / ".host"
COMFY_DIR = HOST_DIR / "ComfyUI"
HOST_PYTHON = HOST_DIR / "venv" / "bin" / "python"
BASE_DIR = HOST_DIR / "base"
LOG_DIR = HOST_DIR / "logs"
INSTALL_SCRIPT = REPO / "scripts" / "install_comfyui_host.sh"
INSTALL_STAMP = HOST_DIR / ".installed"
BROWSER_SCRIPT = REPO / "scripts" / "install_browser.sh"
PACK_NAME = "comfyui-fusionframes"
PACK_MODULE = f"custom_nodes.{PACK_NAME}"
BASE_SUBDIRS = ("custom_nodes", "models", "input", "output", "temp", "user")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class ComfyError(RuntimeError):
    """The server did not start, answered unexpectedly, or a prompt did not finish in time."""


class PromptRejected(ComfyError):
    """POST /prompt answered something other than 200 (validation error, unknown node type...)."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        shown = body if isinstance(body, str) else json.dumps(body)
        super().__init__(f"POST /prompt -> HTTP {status}: {shown[:4000]}")


# --------------------------------------------------------------------------------------------------------------------
# Installation


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def ensure_host(timeout: float = 3600) -> Path:
    """Install the ComfyUI host if needed (the script returns at once when its stamp is current); return .host/.

    Never skips: a failed installation raises ComfyError with the script's output, so the calling test fails.
    """
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not HOST_PYTHON.exists() or not (COMFY_DIR / "main.py").exists():
        raise ComfyError(
            f"{INSTALL_SCRIPT.relative_to(REPO)} failed (exit {proc.returncode}):\n{_tail(proc.stdout, 120)}"
        )
    return HOST_DIR


def ensure_browser(timeout: float = 900) -> str:
    """Install Debian's chromium if needed (scripts/install_browser.sh); return its path. Raises on failure."""
    path = shutil.which("chromium")
    if path:
        return path
    proc = subprocess.run(
        ["bash", str(BROWSER_SCRIPT)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout, check=False,
    )
    path = shutil.which("chromium")
    if proc.returncode != 0 or not path:
        raise ComfyError(f"{BROWSER_SCRIPT.relative_to(REPO)} failed (exit {proc.returncode}):\n{_tail(proc.stdout)}")
    return path


def make_base(base: Path = BASE_DIR, link_pack: bool = True) -> Path:
    """Create a --base-directory layout (custom_nodes/, models/, ...) and link this checkout in as the pack."""
    base = Path(base)
    for sub in BASE_SUBDIRS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    if link_pack:
        link = base / "custom_nodes" / PACK_NAME
        if link.is_symlink() and link.resolve() != REPO.resolve():
            link.unlink()
        if not link.exists() and not link.is_symlink():
            link.symlink_to(REPO, target_is_directory=True)
    return base


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pack_nodes(object_info: dict[str, Any], module: str = PACK_MODULE) -> dict[str, Any]:
    """The entries of GET /object_info registered by this pack (python_module == custom_nodes.comfyui-fusionframes)."""
    return {
        name: info
        for name, info in object_info.items()
        if info.get("python_module") == module or str(info.get("python_module", "")).startswith(module + ".")
    }


# --------------------------------------------------------------------------------------------------------------------
# Browser


def screenshot(url: str, path: str | os.PathLike, window_size: str = "1400,900", virtual_time_ms: int = 15000,
               timeout: float = 120, chromium: str | None = None) -> Path:
    """Render `url` with headless chromium into the PNG `path` (a fresh, throw-away profile each time)."""
    browser = chromium or ensure_browser()
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window_size}",
            f"--virtual-time-budget={virtual_time_ms}", f"--screenshot={path}", url,
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              check=False)
    if not path.exists():
        raise ComfyError(f"chromium wrote no screenshot (exit {proc.returncode}):\n{_tail(proc.stdout, 40)}")
    return path


# --------------------------------------------------------------------------------------------------------------------
# The server


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1:<free port>; a context manager that always stops it.

    base: the --base-directory (default .host/base, created with the pack linked in); prepare(base) runs before the
    server starts (e.g. to copy demo models into base/models/...). The log goes to log_path (default
    .host/logs/comfyui-<port>.log).
    """

    def __init__(
        self,
        base: str | os.PathLike = BASE_DIR,
        port: int | None = None,
        prepare: Callable[[Path], Any] | None = None,
        start_timeout: float = 120,
        log_path: str | os.PathLike | None = None,
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        link_pack: bool = True,
    ):
        self.base = Path(base).resolve()
        self.port = port or free_port()
        self.prepare = prepare
        self.start_timeout = start_timeout
        self.log_path = Path(log_path) if log_path else LOG_DIR / f"comfyui-{self.port}.log"
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.link_pack = link_pack
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self.returncode: int | None = None
        self._log_file = None

    # ---- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        return [
            str(HOST_PYTHON), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base), "--disable-api-nodes", "--disable-auto-launch", "--log-stdout",
            # The default database lies in ComfyUI/user/, which a --base-directory setup does not create.
            "--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}",
            *self.extra_args,
        ]

    def start(self) -> ComfyServer:
        if self.proc is not None:
            raise ComfyError("server already started")
        if not HOST_PYTHON.exists() or not (COMFY_DIR / "main.py").exists():
            raise ComfyError(f"no ComfyUI host in {HOST_DIR}: call ensure_host() (or run {INSTALL_SCRIPT}) first")
        make_base(self.base, link_pack=self.link_pack)
        if self.prepare is not None:
            self.prepare(self.base)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"})
        env.update(self.env)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=COMFY_DIR, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComfyError(
                    f"ComfyUI exited with {self.proc.returncode} before answering; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(OSError, ComfyError, ValueError):
                status, _ = self._request("GET", "/system_stats", timeout=2)
                if status == 200:
                    return
            time.sleep(0.5)
        raise ComfyError(
            f"ComfyUI did not answer /system_stats within {self.start_timeout:.0f} s; log {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def stop(self, timeout: float = 15) -> int | None:
        """Stop the server by its PID: SIGINT (ComfyUI logs 'Stopped server', cleans temp/ and exits 0), then
        SIGTERM, then SIGKILL, each after `timeout` s; return its exit code."""
        proc = self.proc
        if proc is not None:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
        if proc is not None:
            self.returncode = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.returncode

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- HTTP

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, bytes]:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    @staticmethod
    def _decode(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def get(self, path: str, timeout: float = 60) -> Any:
        """GET path; the decoded JSON (or text). Raises ComfyError unless HTTP 200."""
        status, raw = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {path} -> HTTP {status}: {raw[:2000]!r}")
        return self._decode(raw)

    def get_bytes(self, path: str, timeout: float = 60) -> bytes:
        """GET path; the raw body (e.g. /view?filename=...). Raises ComfyError unless HTTP 200."""
        status, raw = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {path} -> HTTP {status}: {raw[:2000]!r}")
        return raw

    def post(self, path: str, json: Any = None, timeout: float = 60) -> tuple[int, Any]:  # noqa: A002
        """POST a JSON body; (HTTP status, decoded JSON or text or None when empty). Never raises on HTTP errors."""
        status, raw = self._request("POST", path, {} if json is None else json, timeout=timeout)
        return status, (self._decode(raw) if raw else None)

    # ---- prompts

    def submit(self, api_graph: dict[str, Any]) -> tuple[int, Any]:
        """POST /prompt; (status, body) whatever the answer: for validation tests (400 + node_errors...)."""
        return self.post("/prompt", {"prompt": api_graph, "client_id": self.client_id})

    def queue(self, api_graph: dict[str, Any]) -> str:
        """POST /prompt; the prompt_id. Raises PromptRejected (with .status and .body) when the answer is not 200."""
        status, body = self.submit(api_graph)
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise PromptRejected(status, body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, poll: float = 0.25) -> dict[str, Any]:
        """Poll /history/ID until status.status_str is 'success' or 'error'; return that history entry.

        Raises ComfyError (with the log tail) on timeout or when the server dies meanwhile.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ComfyError(f"ComfyUI stopped while waiting for {prompt_id}:\n{self.log_tail()}")
            history = self.get(f"/history/{urllib.parse.quote(prompt_id)}")
            entry = history.get(prompt_id) if isinstance(history, dict) else None
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(poll)
        raise ComfyError(f"prompt {prompt_id} not finished after {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, api_graph: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """queue + wait; the history entry. Raises ComfyError with the execution error when it did not succeed."""
        entry = self.wait(self.queue(api_graph), timeout=timeout)
        if entry["status"]["status_str"] != "success":
            raise ComfyError(f"prompt failed: {execution_error(entry)}\n{self.log_tail(40)}")
        return entry

    def messages(self, timeout: float = 30) -> WebSocketMessages:
        """The server's websocket for this client (``client_id``): what the canvas receives (progress, previews)."""
        return WebSocketMessages(self.port, self.client_id, timeout)

    def interrupt(self, prompt_id: str | None = None) -> int:
        """POST /interrupt (global, or only that prompt when it is the running one); the HTTP status."""
        status, _ = self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        return status

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return self.get("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def output_path(self, item: dict[str, Any]) -> Path:
        """The file of one history output item ({filename, subfolder, type}) under the base directory."""
        return self.base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]

    # ---- log

    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return _tail(self.log_text(), lines)

    def import_failed(self, pack_name: str = PACK_NAME) -> bool:
        """True when the log has an '(IMPORT FAILED)' line naming custom_nodes/<pack_name>."""
        pattern = re.compile(r"\(IMPORT FAILED\).*[/\\]" + re.escape(pack_name) + r"\s*$")
        return any(pattern.search(line) for line in self.log_text().splitlines())

    def import_traceback(self, pack_name: str = PACK_NAME) -> str:
        """The log lines of the failed import of custom_nodes/<pack_name> (traceback + 'Cannot import'), or ''."""
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Cannot import") and re.search(r"[/\\]" + re.escape(pack_name) + r"\b", line):
                start = i
                while start > 0 and not lines[start].startswith("Traceback"):
                    start -= 1
                return "\n".join(lines[start:i + 1])
        return ""

    # ---- browser

    def screenshot(self, path: str | os.PathLike, **kwargs) -> Path:
        """A headless chromium screenshot of this server's page."""
        return screenshot(self.url + "/", path, **kwargs)


def execution_error(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The 'execution_error' message of a history entry ({node_id, node_type, exception_message, ...}) or None."""
    for message in entry.get("status", {}).get("messages", []):
        if message and message[0] == "execution_error":
            return message[1]
    return None


def output_items(entry: dict[str, Any], node_id: str | None = None, key: str = "images") -> list[dict[str, Any]]:
    """Output items (filename/subfolder/type) of a history entry: of one node, or of all nodes."""
    outputs = entry.get("outputs", {})
    nodes = [outputs.get(node_id, {})] if node_id is not None else list(outputs.values())
    return [item for node in nodes for item in node.get(key, [])]


class WebSocketMessages:
    """A minimal websocket client (RFC 6455, client side, no extensions) for ComfyUI's ``/ws``: text messages come
    back as their JSON, binary ones (previews) as ``(event type, bytes)``. Standard library only."""

    def __init__(self, port: int, client_id: str, timeout: float = 30) -> None:
        import base64

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /ws?clientId={urllib.parse.quote(client_id)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        header = b""
        while b"\r\n\r\n" not in header:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ComfyError("the websocket closed during the handshake")
            header += chunk
        if b" 101 " not in header.split(b"\r\n", 1)[0]:
            raise ComfyError(f"websocket handshake refused: {header[:200]!r}")

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ComfyError("the websocket closed")
            data += chunk
        return data

    def receive(self) -> Any:
        """The next whole message: a dict (JSON text) or ``(event type, payload)`` (binary). Raises TimeoutError."""
        payload, opcode = b"", None
        while True:
            first, second = self._exactly(2)
            fin, frame_opcode = first & 0x80, first & 0x0F
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._exactly(2), "big")
            elif length == 127:
                length = int.from_bytes(self._exactly(8), "big")
            data = self._exactly(length)
            if frame_opcode == 0x8:
                raise ComfyError("the server closed the websocket")
            if frame_opcode == 0x9:  # ping: answer with a (masked) pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if frame_opcode in (0x1, 0x2):
                opcode = frame_opcode
            payload += data
            if fin:
                break
        if opcode == 0x1:
            return json.loads(payload)
        return int.from_bytes(payload[:4], "big"), payload[4:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> WebSocketMessages:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
