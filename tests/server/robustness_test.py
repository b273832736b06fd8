"""kiln serve under bad input and bad clients: every malformed, mistyped or out-of-range request gets
its HTTP status and an OpenAI-shaped error body; a full queue answers 429; a client that leaves
mid-stream, or before a non-streamed answer comes, has its request cancelled; a POST without a body is
answered 400 at once and a wrong method 405 with Allow; afterwards the server still answers correctly and
every KV block is free. Last, SIGTERM: new requests are refused, a running stream finishes, exit code 0.

Usage: robustness_test.py KILN_BINARY
"""
import json
import socket
import sys
import threading
import time

from kiln_server import Failures, KilnServer, sse_events


def error_ok(t, srv, what, method, path, body, status, param=None, code=None, headers=None):
    st, hdrs, raw = srv.request(method, path, body, headers=headers)
    ok = t.check(st == status, f"{what}: status {st}, wanted {status}: {raw[:300]!r}")
    try:
        err = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        t.check(False, f"{what}: not an OpenAI error body: {raw[:300]!r}")
        return
    t.check(isinstance(err.get("message"), str) and err["message"], f"{what}: message")
    t.check(isinstance(err.get("type"), str) and "param" in err and "code" in err, f"{what}: error fields {err}")
    if param is not None:
        t.check(err.get("param") == param, f"{what}: param {err.get('param')!r}, wanted {param!r}")
    if code is not None:
        t.check(err.get("code") == code, f"{what}: code {err.get('code')!r}, wanted {code!r}")
    return ok


def check_correct(t, srv, what):
    st, _, raw = srv.request("POST", "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0})
    ok = st == 200 and json.loads(raw)["usage"]["completion_tokens"] >= 1
    t.check(ok, f"{what}: a normal request works ({st} {raw[:200]!r})")


def wait_running(srv, thread, timeout=60):
    """Waits until the engine runs a request (or the request's thread ended, or the timeout)."""
    deadline = time.time() + timeout
    while srv.metrics().get("kiln_requests_running", 0) < 1 and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)


def main():
    kiln = sys.argv[1]
    t = Failures("robustness")
    # A small context and body limit make those limits cheap to hit; one request runs at a time and
    # one may wait, so a burst fills the queue.
    args = ["--max-seq-len", "256", "--max-body-bytes", "65536", "--max-batch-size", "1", "--max-queue", "1",
            "--kv-cache-bytes", str(64 << 20), "--served-model-name", "smol", "--shutdown-timeout", "60"]
    with KilnServer(kiln, args) as srv:
        C, CH = "/v1/completions", "/v1/chat/completions"
        cases = [
            ("malformed JSON", C, '{"prompt": "x",', 400, None, "invalid_json"),
            ("not an object", C, "[1, 2, 3]", 400, None, "invalid_json"),
            ("empty body", C, "", 400, None, "invalid_json"),
            ("prompt of the wrong type", C, {"prompt": 42}, 400, "prompt", "invalid_type"),
            ("prompt missing", C, {"max_tokens": 3}, 400, "prompt", None),
            ("token id outside the vocabulary", C, {"prompt": [1, 99999999]}, 400, "prompt", None),
            ("unknown model", C, {"model": "gpt-4", "prompt": "x"}, 400, "model", "model_not_found"),
            ("temperature as a string", C, {"prompt": "x", "temperature": "0.5"}, 400, "temperature", "invalid_type"),
            ("temperature out of range", C, {"prompt": "x", "temperature": -1}, 400, "temperature", None),
            ("top_p zero", C, {"prompt": "x", "top_p": 0}, 400, "top_p", None),
            ("max_tokens zero", C, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens", None),
            ("max_tokens beyond the context", C, {"prompt": "x", "max_tokens": 1000}, 400, "max_tokens",
             "context_length_exceeded"),
            ("prompt longer than the context", C, {"prompt": "word " * 400}, 400, "prompt", "context_length_exceeded"),
            ("n too large", C, {"prompt": "x", "n": 1000}, 400, "n", None),
            ("logprobs too large", C, {"prompt": "x", "logprobs": 100}, 400, "logprobs", None),
            ("stop of the wrong type", C, {"prompt": "x", "stop": {"a": 1}}, 400, "stop", None),
            ("stream_options without stream", C, {"prompt": "x", "stream_options": {"include_usage": True}}, 400,
             "stream_options", None),
            ("messages missing", CH, {"model": "smol"}, 400, "messages", None),
            ("messages empty", CH, {"messages": []}, 400, "messages", None),
            ("message without role", CH, {"messages": [{"content": "x"}]}, 400, "messages[0].role", None),
            ("image content", CH, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
             "messages[0].content[0].type", None),
            ("chat longer than the context", CH, {"messages": [{"role": "user", "content": "word " * 400}]}, 400,
             "messages", "context_length_exceeded"),
            ("top_logprobs without logprobs", CH, {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
             400, "top_logprobs", None),
            ("body over the limit", C, json.dumps({"prompt": "x" * 100000}), 413, None, "request_too_large"),
        ]
        for what, path, body, status, param, code in cases:
            error_ok(t, srv, what, "POST", path, body, status, param, code)
        error_ok(t, srv, "unknown route", "GET", "/v1/unknown", None, 404, None, "not_found")
        error_ok(t, srv, "unknown model card", "GET", "/v1/models/nope", None, 404, "model", "model_not_found")
        check_correct(t, srv, "after bad inputs")

        # A burst against a batch of one and a queue of one: some get 429, the rest finish, none fail otherwise.
        statuses = []
        lock = threading.Lock()

        def one():
            st, _, raw = srv.request("POST", C, {"prompt": "Count: 1, 2,", "max_tokens": 24, "temperature": 0})
            with lock:
                statuses.append((st, raw))

        burst = [threading.Thread(target=one) for _ in range(8)]
        for th in burst:
            th.start()
        for th in burst:
            th.join()
        codes = sorted(s for s, _ in statuses)
        t.check(429 in codes and 200 in codes and set(codes) <= {200, 429}, f"burst statuses {codes}")
        for st, raw in statuses:
            if st == 429:
                t.check(json.loads(raw)["error"]["code"] == "rate_limit_exceeded", f"429 body {raw!r}")
                break
        check_correct(t, srv, "after the burst")

        # A client that leaves mid-stream: its request is cancelled and its KV blocks come back.
        before = srv.metrics()
        sock = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps({"prompt": "Tell me a long story.", "max_tokens": 200, "stream": True, "ignore_eos": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        got = b""
        sock.settimeout(60)
        while got.count(b"data: ") < 3:
            piece = sock.recv(4096)
            if not piece:
                break
            got += piece
        sock.close()
        t.check(got.count(b"data: ") >= 3, f"the stream to abandon started: {got[:300]!r}")
        m = srv.wait_idle()
        cancelled = m.get('kiln_request_finish_total{reason="cancelled"}', 0) - before.get(
            'kiln_request_finish_total{reason="cancelled"}', 0)
        t.check(cancelled == 1, f"the abandoned stream is cancelled (cancelled +{cancelled})")
        gen = m["kiln_generation_tokens_total"] - before["kiln_generation_tokens_total"]
        t.check(gen < 200, f"the abandoned stream stopped early ({gen} tokens)")
        t.check(m["kiln_requests_running"] == 0 and m["kiln_requests_waiting"] == 0, "nothing left running")
        t.check(m["kiln_kv_cache_blocks_free"] == m["kiln_kv_cache_blocks_total"],
                f"KV pool all free: {m['kiln_kv_cache_blocks_free']} of {m['kiln_kv_cache_blocks_total']}")
        check_correct(t, srv, "after the disconnect")

        # The same for a client that waits for a whole (non-streamed) answer and leaves before it comes.
        before = srv.metrics()
        sock = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps({"prompt": "Tell me a long story.", "max_tokens": 200, "ignore_eos": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        deadline = time.time() + 60
        while srv.metrics().get("kiln_requests_running", 0) < 1 and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # a few tokens in
        sock.close()
        m = srv.wait_idle()
        cancelled = m.get('kiln_request_finish_total{reason="cancelled"}', 0) - before.get(
            'kiln_request_finish_total{reason="cancelled"}', 0)
        t.check(cancelled == 1, f"the abandoned non-streamed request is cancelled (cancelled +{cancelled})")
        gen = m["kiln_generation_tokens_total"] - before["kiln_generation_tokens_total"]
        t.check(gen < 200, f"the abandoned non-streamed request stopped early ({gen} tokens)")
        t.check(m["kiln_kv_cache_blocks_free"] == m["kiln_kv_cache_blocks_total"],
                f"KV pool all free: {m['kiln_kv_cache_blocks_free']} of {m['kiln_kv_cache_blocks_total']}")

        # A POST that sends no body (no Content-Length) is answered 400 at once, not after the read timeout.
        t0 = time.time()
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.settimeout(10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            piece = sock.recv(4096)
            if not piece:
                break
            raw += piece
        sock.close()
        t.check(raw.startswith(b"HTTP/1.1 400") and b"missing_body" in raw and time.time() - t0 < 3,
                f"POST without a body: {raw[:200]!r} after {time.time() - t0:.1f} s")
        # A wrong method gets 405 and the methods the route answers.
        st, hdrs, raw = srv.request("GET", "/v1/chat/completions")
        t.check(st == 405 and hdrs.get("Allow") == "POST", f"GET on a POST route: {st} {hdrs.get('Allow')} {raw[:200]!r}")
        st, hdrs, _ = srv.request("POST", "/health", {})
        t.check(st == 405 and hdrs.get("Allow") == "GET, HEAD", f"POST on /health: {st} {hdrs.get('Allow')}")
        check_correct(t, srv, "after the method and body checks")

        # SIGTERM mid-stream: the stream runs to its end, new requests are refused, exit 0.
        result = {}

        def streaming():
            result["resp"] = srv.request("POST", C, {"prompt": "Once", "max_tokens": 40, "temperature": 0,
                                                     "stream": True, "ignore_eos": True})

        th = threading.Thread(target=streaming)
        th.start()
        wait_running(srv, th)
        srv.proc.send_signal(15)
        time.sleep(0.3)
        try:
            st = srv.request("POST", C, {"prompt": "x", "max_tokens": 1}, timeout=10)[0]
        except OSError:
            st = "refused"
        t.check(st in (503, "refused"), f"a new request during shutdown gets 503 or a refused connection ({st})")
        th.join(timeout=120)
        st, _, raw = result.get("resp", (None, None, b""))
        ev = sse_events(raw) if st == 200 else []
        t.check(st == 200 and ev and ev[-1] == "[DONE]", f"the running stream ends with [DONE] ({st})")
        if ev and ev[-1] == "[DONE]":
            finish = [c["choices"][0]["finish_reason"] for c in ev[:-1] if c.get("choices")]
            n_text = sum(1 for c in ev[:-1] if c.get("choices") and c["choices"][0]["text"])
            t.check(finish[-1] == "length", f"the running stream finished normally ({finish[-1]})")
            t.check(n_text >= 20, f"the running stream got its tokens ({n_text} text chunks)")
        code = srv.proc.wait(timeout=60)
        t.check(code == 0, f"exit code {code} after SIGTERM")
        log = srv.log_text()
        t.check("stopping" in log and "stopped" in log, "shutdown is logged")

    # A stream longer than --shutdown-timeout is cut at the deadline: an error event, [DONE], exit 0.
    with KilnServer(kiln, ["--shutdown-timeout", "0.5", "--kv-cache-bytes", str(64 << 20)]) as srv:
        result = {}

        def long_stream():
            result["resp"] = srv.request("POST", "/v1/completions", {"prompt": "Once", "max_tokens": 1000,
                                                                     "stream": True, "ignore_eos": True})

        th = threading.Thread(target=long_stream)
        th.start()
        wait_running(srv, th)
        t0 = time.time()
        srv.proc.send_signal(15)
        code = srv.proc.wait(timeout=60)
        th.join(timeout=60)
        t.check(code == 0 and time.time() - t0 < 15, f"exit code {code} within the shutdown timeout")
        st, _, raw = result.get("resp", (None, None, b""))
        ev = sse_events(raw) if st == 200 else []
        t.check(ev and ev[-1] == "[DONE]" and any(isinstance(e, dict) and "error" in e for e in ev),
                f"the cut stream ends with an error event and [DONE] ({ev[-2:] if ev else st})")
    t.finish()


if __name__ == "__main__":
    main()
