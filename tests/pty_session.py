#!/usr/bin/env python3
"""pty_session.py: drives a command through a pseudo-terminal as a user at a
keyboard would, for the REPL specs (tests/functional/repl_spec.lua).

usage: pty_session.py SCENARIO.json TRANSCRIPT -- COMMAND [ARGS...]

SCENARIO is a JSON list of steps, run in order:
  {"send": "text"}               type text (\\r is Enter, \\u0003 is Ctrl-C)
  {"expect": "regex"}            wait until the output since the last send
                                 matches (Python re, DOTALL), at most
                                 "timeout" seconds (default 15)
  {"touch": "path"}              create a file (tells the spec a point was reached)
  {"wait_file": "path"}          wait until the spec creates a file
  {"exit": code}                 wait for the command to exit with that code
Every byte the command writes is appended to TRANSCRIPT as it comes, so the
spec can wait on it too. Exits 0 when every step held, 1 naming the first
that did not (with the output it saw), 2 on bad usage. No step sleeps for a
fixed time: each waits on its condition, bounded.
"""
import json
import os
import pty
import re
import select
import signal
import sys
import time


def main(argv):
    if len(argv) < 5 or argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        steps = json.load(f)
    transcript = open(argv[2], "ab", buffering=0)
    cmd = argv[4:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.setdefault("TERM", "xterm")
        os.execvp(cmd[0], cmd)
    seen = b""        # output since the last send
    status = None     # the command's wait status once it exited

    def pump(timeout):
        nonlocal seen, status
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                seen += data
                transcript.write(data)
                return
        if status is None:
            p, st = os.waitpid(pid, os.WNOHANG)
            if p == pid:
                status = st

    def fail(i, step, why):
        print(f"step {i + 1} {json.dumps(step)}: {why}\n--- output since the last send:\n"
              + seen.decode(errors="replace"), file=sys.stderr)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return 1

    for i, step in enumerate(steps):
        deadline = time.monotonic() + step.get("timeout", 15)
        if "send" in step:
            seen = b""
            os.write(fd, step["send"].encode())
        elif "expect" in step:
            pat = re.compile(step["expect"].encode(), re.S)
            while not pat.search(seen):
                if time.monotonic() > deadline:
                    return fail(i, step, "not seen in time")
                if status is not None and not select.select([fd], [], [], 0)[0]:
                    return fail(i, step, "the command exited first")
                pump(0.05)
        elif "touch" in step:
            open(step["touch"], "a").close()
        elif "wait_file" in step:
            while not os.path.exists(step["wait_file"]):
                if time.monotonic() > deadline:
                    return fail(i, step, "the file did not appear in time")
                pump(0.05)
        elif "exit" in step:
            while status is None:
                if time.monotonic() > deadline:
                    return fail(i, step, "the command did not exit in time")
                pump(0.05)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            if code != step["exit"]:
                return fail(i, step, f"exit code {code}")
        else:
            return fail(i, step, "unknown step")
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
