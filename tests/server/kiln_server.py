"""Starts and stops a real `kiln serve` for the server tests, and reads its /metrics.

The server binds 127.0.0.1 on a free port (--port 0; the port is read from its stderr line
"listening on http://127.0.0.1:PORT") with the default model unless --model is given.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_MODEL = os.path.join(
    os.environ.get("KILN_CACHE_DIR")
    or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kiln"),
    "SmolLM2-135M-Instruct.Q4_1.gguf")


class Failures:
    """Collects check failures so one run reports all of them."""

    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {self.name}: {what}", flush=True)
        return cond

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


class KilnServer:
    def __init__(self, kiln, args=(), model=None, timeout=180):
        model = model or DEFAULT_MODEL
        if not os.path.exists(model):
            sys.exit(f"FAIL: the model {model} is absent; run scripts/fetch-default-model.sh")
        self.log = tempfile.NamedTemporaryFile(prefix="kiln-serve-", suffix=".log", delete=False)
        cmd = [kiln, "serve", "--model", model, "--port", "0", "--threads", os.environ.get("KILN_TEST_THREADS", "2"),
               *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.port = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.port is None:
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log_text())
                if m:
                    self.port = int(m.group(1))
            elif self.status("/health") == 200:
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"kiln serve did not become ready in {timeout} s:\n{self.log_text()}")

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict, body bytes); body may be bytes, str or a JSON-able object."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def status(self, path):
        try:
            return self.request("GET", path, timeout=5)[0]
        except OSError:
            return None

    def metrics(self):
        """{'name{labels}': value} from /metrics."""
        status, _, body = self.request("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def wait_idle(self, timeout=30):
        """Waits until nothing runs or waits and every KV block is free; returns the last metrics."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            idle = (m.get("kiln_requests_running") == 0 and m.get("kiln_requests_waiting") == 0
                    and m.get("kiln_kv_cache_blocks_free") == m.get("kiln_kv_cache_blocks_total"))
            if idle or time.time() > deadline:
                return m
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig and returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        os.unlink(self.log.name)


def sse_events(raw):
    """The data payloads of an SSE body, JSON-decoded ([DONE] stays a string)."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out
