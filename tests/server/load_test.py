"""A bounded load test of kiln serve from a second process: 1,000 streaming requests (completions
and chat, mixed lengths, sampled) from 64 concurrent clients of the official async openai client.
Every request must succeed, and /metrics must agree with what was sent: 1,000 more 200s, prompt and
generated tokens equal to the sums of the usage the clients got, one TTFT sample per request, and
afterwards nothing running and every KV block free.

Usage: load_test.py KILN_BINARY [--requests N] [--concurrency C]
"""
import argparse
import asyncio
import random
import time

import openai

from kiln_server import Failures, KilnServer

PROMPTS = [
    "The quick brown fox", "Once upon a time", "In a galaxy far away", "The capital of France is",
    "List three fruits:", "def fibonacci(n):", "Dear diary, today", "The weather tomorrow will be",
]
QUESTIONS = ["What is 2+2?", "Name a color.", "Say hello.", "What is the sun?", "Give me a word."]


async def one(client, i, rng, stats):
    chat = i % 2 == 1
    max_tokens = rng.randint(2, 8)
    common = dict(model="smol", max_tokens=max_tokens, temperature=rng.choice([0.0, 0.7, 1.0]), seed=i,
                  stream=True, stream_options={"include_usage": True})
    try:
        if chat:
            stream = await client.chat.completions.create(
                messages=[{"role": "user", "content": rng.choice(QUESTIONS)}], **common)
        else:
            stream = await client.completions.create(prompt=rng.choice(PROMPTS), **common)
        usage, finish, chunks = None, None, 0
        async for c in stream:
            chunks += 1
            if c.usage is not None:
                usage = c.usage
            for ch in c.choices:
                if ch.finish_reason:
                    finish = ch.finish_reason
        if usage is None or finish not in ("stop", "length") or usage.completion_tokens > max_tokens:
            stats["errors"].append(f"request {i}: usage {usage} finish {finish}")
            return
        stats["prompt_tokens"] += usage.prompt_tokens
        stats["completion_tokens"] += usage.completion_tokens
        stats["ok"] += 1
        stats["chat" if chat else "completions"] += 1
    except Exception as e:  # any failure is a counted error, reported below
        stats["errors"].append(f"request {i}: {type(e).__name__}: {e}")


async def run_load(base_url, n, concurrency):
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=300)
    stats = {"ok": 0, "prompt_tokens": 0, "completion_tokens": 0, "chat": 0, "completions": 0, "errors": []}
    rng = random.Random(42)
    queue = list(range(n))

    async def worker():
        while queue:
            await one(client, queue.pop(), rng, stats)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return stats


def delta(after, before, key):
    return after.get(key, 0) - before.get(key, 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kiln")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    t = Failures("load")
    args = ["--served-model-name", "smol", "--max-batch-size", str(a.concurrency), "--max-queue", "0",
            "--kv-cache-bytes", str(256 << 20), "--http-threads", str(2 * a.concurrency + 16)]
    with KilnServer(a.kiln, args) as srv:
        before = srv.metrics()
        t0 = time.time()
        stats = asyncio.run(run_load(srv.base_url, a.requests, a.concurrency))
        secs = time.time() - t0
        for e in stats["errors"][:10]:
            print("error:", e)
        t.check(not stats["errors"], f"{len(stats['errors'])} requests failed")
        t.check(stats["ok"] == a.requests, f"{stats['ok']} of {a.requests} requests succeeded")
        after = srv.wait_idle()
        sent = {"/v1/completions": stats["completions"], "/v1/chat/completions": stats["chat"]}
        for route, n in sent.items():
            got = delta(after, before, f'kiln_http_requests_total{{route="{route}",status="200"}}')
            t.check(got == n, f"/metrics counts {got} 200s on {route}, {n} were sent")
        t.check(delta(after, before, "kiln_requests_total") == a.requests, "kiln_requests_total")
        t.check(delta(after, before, "kiln_prompt_tokens_total") == stats["prompt_tokens"],
                f"prompt tokens: metrics {delta(after, before, 'kiln_prompt_tokens_total')}, usage {stats['prompt_tokens']}")
        t.check(delta(after, before, "kiln_generation_tokens_total") == stats["completion_tokens"],
                f"generated tokens: metrics {delta(after, before, 'kiln_generation_tokens_total')}, "
                f"usage {stats['completion_tokens']}")
        t.check(delta(after, before, "kiln_time_to_first_token_seconds_count") == a.requests, "one TTFT per request")
        t.check(delta(after, before, 'kiln_time_to_first_token_seconds_bucket{le="+Inf"}') == a.requests,
                "TTFT +Inf bucket")
        finished = sum(delta(after, before, f'kiln_request_finish_total{{reason="{r}"}}') for r in ("stop", "length"))
        t.check(finished == a.requests, f"{finished} stop/length finishes")
        for bad in ("cancelled", "error"):
            t.check(delta(after, before, f'kiln_request_finish_total{{reason="{bad}"}}') == 0, f"no {bad} finishes")
        errors = sum(delta(after, before, k) for k in after
                     if k.startswith('kiln_http_requests_total{route="/v1/') and 'status="200"' not in k)
        t.check(errors == 0, f"{errors} non-200 responses")
        t.check(after["kiln_requests_running"] == 0 and after["kiln_requests_waiting"] == 0, "idle afterwards")
        t.check(after["kiln_kv_cache_blocks_free"] == after["kiln_kv_cache_blocks_total"], "KV pool all free")
        print(f"load: {a.requests} requests ({stats['completions']} completions, {stats['chat']} chat), concurrency "
              f"{a.concurrency}, {secs:.1f} s, {stats['completion_tokens'] / secs:.0f} generated tok/s, "
              f"{(stats['prompt_tokens'] + stats['completion_tokens']) / secs:.0f} total tok/s, prefix hit rate "
              f"{after.get('kiln_prefix_cache_hit_rate', 0):.2f}", flush=True)
        t.check(srv.stop() == 0, "SIGTERM exits 0")
    t.finish()


if __name__ == "__main__":
    main()
