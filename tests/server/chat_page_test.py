"""The chat page of kiln serve in headless Chromium (Debian's package), driven through the DevTools
protocol: a message is typed into the page and sent with Enter, the reply is seen growing while it
streams and then complete, and a screenshot of the page is saved.

Usage: chat_page_test.py KILN_BINARY SCREENSHOT_PNG
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

from kiln_server import Failures, KilnServer


class DevTools:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout=60, interval=0.02):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expression)
            if v:
                return v
            time.sleep(interval)
        return None


def start_chromium(profile):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        sys.exit("FAIL: chromium is not installed (scripts/install-deps.sh installs Debian's chromium)")
    proc = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1000,700", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(port_file):
        time.sleep(0.05)
    with open(port_file) as f:
        port = int(f.readline())
    for _ in range(100):
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        pages = [p for p in pages if p.get("type") == "page"]
        if pages:
            return proc, pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.05)
    raise RuntimeError("no page target in Chromium")


def main():
    kiln, screenshot = sys.argv[1], sys.argv[2]
    t = Failures("chat_page")
    profile = tempfile.mkdtemp(prefix="kiln-chromium-")
    browser = None
    try:
        with KilnServer(kiln, ["--served-model-name", "smol", "--kv-cache-bytes", str(64 << 20)]) as srv:
            browser, ws_url = start_chromium(profile)
            dt = DevTools(ws_url)
            dt.call("Page.enable")
            dt.call("Runtime.enable")
            dt.call("Page.navigate", url=srv.base_url + "/")
            t.check(dt.wait_for("document.readyState === 'complete' && !!document.getElementById('input')"),
                    "the page loads")
            model = dt.wait_for("document.getElementById('model').textContent.startsWith('smol') && "
                                "document.getElementById('model').textContent")
            t.check(model, f"the page shows the model name ({model})")
            # Room for a reply long enough to watch it stream.
            dt.js("document.getElementById('max_tokens').value = 48; document.getElementById('temperature').value = 0;")
            dt.js("document.getElementById('input').focus()")
            dt.call("Input.insertText", text="Hello! What can you do?")
            t.check(dt.js("document.getElementById('input').value") == "Hello! What can you do?", "the message is typed")
            for kind in ("keyDown", "keyUp"):
                dt.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                        nativeVirtualKeyCode=13)
            reply = "(() => { const m = document.querySelector('.msg.assistant'); return m ? m.textContent : null; })()"
            done = "(() => { const m = document.querySelector('.msg.assistant'); return !!(m && m.dataset.done); })()"
            # Sample the reply while it streams: it should be seen partial, then longer, before it is done.
            lengths = []
            deadline = time.time() + 120
            while time.time() < deadline:
                text, finished = dt.js(reply), dt.js(done)
                if text:
                    lengths.append(len(text))
                if finished or dt.js("!!document.querySelector('.msg.error')"):
                    break
                time.sleep(0.01)
            final = dt.js(reply)
            err = dt.js("(() => { const m = document.querySelector('.msg.error'); return m ? m.textContent : null; })()")
            t.check(err is None, f"no error shown ({err})")
            t.check(dt.js(done), "the reply completes")
            t.check(final and len(final.strip()) > 0, f"the reply has text ({final!r})")
            partial = sorted(set(n for n in lengths if final and 0 < n < len(final)))
            t.check(len(partial) >= 2, f"the reply was seen growing while streaming (partial lengths {partial})")
            t.check(dt.js("document.querySelector('.msg.user').textContent") == "Hello! What can you do?",
                    "the user's message is shown")
            status = dt.js("document.getElementById('status').textContent")
            t.check(status.startswith("done:"), f"status line ({status})")
            shot = dt.call("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            with open(screenshot, "wb") as f:
                f.write(png)
            t.check(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, f"screenshot saved to {screenshot}")
            print(f"chat_page: reply {final!r}; screenshot {screenshot}", flush=True)
    finally:
        if browser:
            browser.terminate()
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
