#!/usr/bin/env bash
# `kiln chat` in a terminal (tmux): /help lists the commands instead of sending them to the model; Ctrl-C during
# a reply stops it and keeps the conversation; /save writes it; /system sets the system prompt and keeps the
# turns; the up arrow recalls the last line (editline history); /clear starts over; Ctrl-C at the prompt quits
# with exit code 0, and so does Ctrl-D, at once. Usage: chat_terminal.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1
command -v tmux >/dev/null || { echo "FAIL: tmux is not installed (scripts/install-deps.sh --test)"; exit 1; }
cache=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f $model ]] || { echo "FAIL: the default model is absent ($model); run scripts/fetch-default-model.sh"; exit 1; }
tmp=$(mktemp -d)
sock=kiln-chat-test-$$
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$tmp"' EXIT
python3 - "$kiln" "$model" "$tmp" "$sock" <<'PY'
import json, os, subprocess, sys, time

kiln, model, tmp, sock = sys.argv[1:]
failures = []


def tmux(*args):
    return subprocess.run(["tmux", "-u", "-L", sock, *args], check=True, capture_output=True, text=True).stdout


def start(name, extra=""):
    exit_file = os.path.join(tmp, name + ".exit")
    # A UTF-8 locale, as a user's terminal has (CI's environment may have none): editline decodes input by it.
    cmd = (f"LC_ALL=C.UTF-8 '{kiln}' chat --model '{model}' -t 0 -n 1500 --threads 2 {extra}; "
           f"echo $? > '{exit_file}'; sleep 60")
    tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "50", cmd)
    return exit_file


def screen(name):
    return tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", name)


def wait_for(name, cond, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = screen(name)
        if cond(s):
            return s
        time.sleep(0.1)
    failures.append(f"timed out waiting for {what}; screen:\n{screen(name)}")
    raise SystemExit(report())


def keys(name, *k):
    tmux("send-keys", "-t", name, *k)


def check(cond, what):
    if not cond:
        failures.append(what)
    else:
        print("ok  ", what)


def report():
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


def prompt_ready(s):
    return s.rstrip().endswith(">")


a = start("a")
wait_for("a", prompt_ready, "the first prompt")
keys("a", "/help", "Enter")
s = wait_for("a", lambda s: "/save FILE" in s and prompt_ready(s), "/help")
check("/system TEXT" in s and "/clear" in s and "tokens," not in s, "/help lists the commands (and the model got nothing)")

# A long reply, stopped by Ctrl-C once it has started.
keys("a", "Count from 1 to 500, one number after another, separated by commas.", "Enter")
wait_for("a", lambda s: s.count(",") >= 12, "the reply to start")
keys("a", "C-c")
s = wait_for("a", lambda s: "stopped by Ctrl-C" in s and prompt_ready(s), "the stopped reply and a new prompt")
check(True, "Ctrl-C stops the reply and returns to the prompt")

save1 = os.path.join(tmp, "one.json")
keys("a", f"/save {save1}", "Enter")
wait_for("a", lambda s: "saved" in s and prompt_ready(s), "/save")
conv = json.load(open(save1))["messages"]
check([m["role"] for m in conv] == ["user", "assistant"] and conv[1]["content"].count(",") >= 5
      and len(conv[1]["content"]) < 1500, f"the conversation keeps the stopped reply: {conv}")

keys("a", "/system You answer in one word, café ☕.", "Enter")
wait_for("a", lambda s: s.count("system prompt set") == 1 and prompt_ready(s), "/system")
keys("a", "Up", "Enter")  # the history recalls the /system line
wait_for("a", lambda s: s.count("system prompt set") == 2 and prompt_ready(s), "the up arrow recalling /system")
check(True, "the up arrow recalls the previous line")
save2 = os.path.join(tmp, "two.json")
keys("a", f"/save {save2}", "Enter")
wait_for("a", lambda s: s.count("saved") == 2 and prompt_ready(s), "the second /save")
conv2 = json.load(open(save2))["messages"]
check([m["role"] for m in conv2] == ["system", "user", "assistant"] and conv2[0]["content"] == "You answer in one word, café ☕."
      and conv2[1:] == conv, f"/system sets the system prompt and keeps the turns: {conv2}")

keys("a", "/clear", "Enter")
wait_for("a", lambda s: "new conversation" in s and prompt_ready(s), "/clear")
save3 = os.path.join(tmp, "three.json")
keys("a", f"/save {save3}", "Enter")
wait_for("a", lambda s: s.count("saved") == 3 and prompt_ready(s), "the third /save")
check(json.load(open(save3))["messages"] == conv2[:1], "/clear keeps only the system prompt")

keys("a", "/frobnicate", "Enter")
wait_for("a", lambda s: "unknown command /frobnicate" in s and prompt_ready(s), "an unknown command")
check(True, "an unknown command is not sent to the model")

# Ctrl-C at the prompt quits, exit code 0.
keys("a", "C-c")
t0 = time.time()
while not os.path.exists(a) and time.time() - t0 < 10:
    time.sleep(0.05)
check(os.path.exists(a) and open(a).read().strip() == "0", "Ctrl-C at the prompt quits with exit code 0")

# Ctrl-D at an empty prompt quits at once.
b = start("b")
wait_for("b", prompt_ready, "the second chat's prompt")
keys("b", "C-d")
t0 = time.time()
while not os.path.exists(b) and time.time() - t0 < 10:
    time.sleep(0.05)
check(os.path.exists(b) and open(b).read().strip() == "0" and time.time() - t0 < 2,
      f"Ctrl-D quits at once ({time.time() - t0:.2f} s)")
sys.exit(report())
PY
