"""Print each failed task of a molecule log: the molecule step, the play, the task and its message.

    python molecule/shared/failed_tasks.py molecule/.cache/failover.log

CI keeps only the head and the tail of a long output, and a molecule failure sits in the middle;
scripts/test-molecule calls this at the end so that the failure is readable where CI shows it.
Retries (``FAILED - RETRYING``) and failures followed by ``...ignoring`` are not failures.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

STEP = re.compile(r"^INFO\s+\[(?P<step>[^\]]+)\] Executing")
PLAY = re.compile(r"^PLAY \[(?P<name>.*)\] \**$")
TASK = re.compile(r"^TASK \[(?P<name>.*)\] \**$")
FAILURE = re.compile(r"^(fatal|failed): \[")
MOLECULE_ERROR = re.compile(r"^(CRITICAL|ERROR)\s")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A failure's message: the lines after it that are indented (the yaml callback) or that continue
# a one-line JSON message; it ends at a blank line or at the next unindented line.
MAX_MESSAGE_LINES = 40


def failed_tasks(lines: Iterable[str]) -> Iterator[str]:
    """Yield readable blocks, one per real failure (a task's or molecule's own)."""
    step = play = task = ""
    pending: list[str] | None = None
    errors_seen: set[str] = set()
    for raw in lines:
        line = ANSI.sub("", raw.rstrip("\n"))
        if pending is not None:
            if line.startswith((" ", "\t")) and len(pending) < MAX_MESSAGE_LINES:
                pending.append(line)
                continue
            if line.strip() != "...ignoring":
                yield "\n".join(pending)
            pending = None
        if match := STEP.match(line):
            step = match["step"]
        elif match := PLAY.match(line):
            play = match["name"]
        elif match := TASK.match(line):
            task = match["name"]
        elif FAILURE.match(line):
            pending = [f"[{step}] play: {play}", f"  task: {task}", f"  {line}"]
        elif MOLECULE_ERROR.match(line) and line not in errors_seen:
            # molecule repeats its error lines while it cleans up: once is enough
            errors_seen.add(line)
            yield f"[{step}] {line}"
    if pending is not None:
        yield "\n".join(pending)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: failed_tasks.py MOLECULE_LOG", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8", errors="replace") as log:
            blocks = list(failed_tasks(log))
    except OSError as exc:
        print(f"cannot read the molecule log {argv[1]}: {exc}", file=sys.stderr)
        return 2
    if not blocks:
        print("  no failed task in the log (molecule itself may have stopped: read the log)")
    for block in blocks:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
