"""A device fault kills the engine (kiln serve --inject-fault-after-steps, the CPU backend's simulated fault): the request
in flight ends with an error naming it, /health answers 503 with the reason, new requests get 503, and the process
exits non-zero on its own so a supervisor restarts it.

On a GPU (extra arguments such as --device cuda --model DIR go to kiln serve) the fault is real: a kernel that writes
out of bounds, a sticky CUDA error.

Usage: engine_death_test.py KILN_BINARY [SERVE ARGS...]
"""
import json
import sys
import time

from kiln_server import Failures, KilnServer


def main():
    kiln, extra = sys.argv[1], sys.argv[2:]
    model = None
    if "--model" in extra:
        i = extra.index("--model")
        model = extra[i + 1]
        extra = extra[:i] + extra[i + 2:]
    cpu = "cuda" not in extra
    f = Failures("engine_death")
    with KilnServer(kiln, ["--inject-fault-after-steps", "3", *extra], model=model) as s:
        status, _, body = s.request("GET", "/v1/models")
        name = json.loads(body)["data"][0]["id"]
        prompt = "The capital of France is" if model is None else [1, 5, 9, 13]
        status, _, body = s.request("POST", "/v1/completions", {"model": name, "prompt": prompt, "max_tokens": 20})
        text = body.decode(errors="replace")
        f.check(status == 500 and "engine dead" in text and (not cpu or "simulated device fault" in text),
                f"the request in flight fails naming the fault: {status} {text}")
        dead_health = refused = False
        deadline = time.time() + 10
        while time.time() < deadline and not (dead_health and refused):
            try:
                st, _, b = s.request("GET", "/health", timeout=5)
                if st == 503 and json.loads(b).get("status") == "dead" and json.loads(b).get("reason"):
                    dead_health = True
                st, _, b = s.request("POST", "/v1/completions", {"model": name, "prompt": prompt, "max_tokens": 2},
                                     timeout=5)
                if st == 503:
                    refused = True
            except OSError:
                break  # the server has gone
            time.sleep(0.02)
        f.check(dead_health, "/health answers 503 {status: dead, reason}")
        f.check(refused, "a new request gets 503 once the engine is dead")
        try:
            code = s.proc.wait(timeout=30)
        except Exception:
            code = None
        f.check(code is not None and code != 0, f"the process exits non-zero on its own (exit {code})")
        f.check("engine dead" in s.log_text(), "stderr names the death")
    f.finish()


if __name__ == "__main__":
    main()
