"""README.md and docs/tutorial.md work as written: their shell blocks run in order, as a newcomer runs them.

Each document runs in a fresh temporary folder that holds a copy of the repository's files (tracked, and
untracked but not ignored: what a checkout has) and ``.venv``, a link to the environment running the tests,
so ``.venv/bin/edgekws`` and ``deploy/…`` mean there what they mean in a checkout after ``make setup``.
Sybil (``sybil.parsers.markdown``) finds the ```` ```bash ```` blocks and its skip directive,
``<!-- skip: next "why" -->``, marks the few that must not run here (installs, ``make test`` itself; an
unmarked install or make target is refused, as it would write into the shared ``.venv``). Every other block
runs command by command, exactly as written, each in its own ``bash`` in that folder (so a ``cd`` or
``export`` would not carry over; the docs use none), with one change to the environment: ``EDGEKWS_SHRINK``
(toolkit/_shrink.py) caps the corpora and the epochs so that a document takes a minute or two instead of half
an hour. Set it yourself to run the docs at other sizes, or empty for their full size
(``EDGEKWS_SHRINK= pytest tests/test_docs.py``).

Commands that run until stopped (see ``DAEMONS``: the broker, the fleet monitor, the agent) start in the
background, as in the second terminal the docs ask for; the next command waits until they are ready (their
port accepts connections, or the agent says ``READY=1`` on ``NOTIFY_SOCKET`` as under systemd). One that
exits before the document ends fails the run; at the end they are stopped with SIGTERM, last started first,
and must exit cleanly. The first command that fails stops the document and is named with its line and
output. Each document gets its own network namespace (``unshare --net``, where the kernel allows it), so
the ports the docs name (1883, 9108) are free whatever else runs on the machine.

By hand: ``.venv/bin/python tests/test_docs.py README.md /tmp/readme-run`` (keeps the folder: the checkout
copy, each command's log, ``shared`` linked beside the copy as the docs' ``../shared`` expects).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from unittest import SkipTest

import click
import pytest
from sybil import Document, Example
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from edgekws.toolkit.fleet import _cli as fleet_cli
from edgekws.toolkit.fleet._broker import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/tutorial.md")
SHRINK = "per-class=3,epochs=1,recordings=2"  # EDGEKWS_SHRINK unless the environment sets it
COMMAND_TIMEOUT_S = 900.0  # one foreground command
READY_TIMEOUT_S = 120.0  # a background command until it is ready
STOP_TIMEOUT_S = 30.0  # a background command after SIGTERM
# Installs and make targets: here they would write into the environment running the tests (.venv is a
# link to it), so a block holding one must be marked <!-- skip: next "why" --> (the docs test refuses it).
INSTALLS = re.compile(r"(^\s*|[;&|(]\s*)(sudo\s+)?(make|apt|apt-get)\b|\bpip3?\s+install\b|-m\s+(pip|venv)\b")


@dataclass(frozen=True)
class Daemon:
    """A command that runs until stopped, and how to tell that it is ready."""

    pattern: str  # regex searched in the command
    # "port": its --port (else `default_port`) accepts TCP connections; "notify": it sent READY=1 on
    # NOTIFY_SOCKET; "started": it has run for a second (a terminal UI, nothing to wait for)
    ready: str
    default_port: int | None = None


def _default_port(command: click.Command) -> int:
    default = next(p.default for p in command.params if p.name == "port")
    assert isinstance(default, int), f"{command.name} --port has no default port"
    return default


DAEMONS = (
    Daemon(r"\bedgekws fleet broker\b", "port", _default_port(fleet_cli.broker)),
    Daemon(r"\bedgekws fleet serve\b", "port", _default_port(fleet_cli.serve)),
    Daemon(r"\bedgekws fleet watch\b(?!.*--once)", "started"),
    Daemon(r"\bedgekws-agent run\b(?!.*--validate-config)", "notify"),
)


class CommandFailed(Exception):
    """A documented command failed; the message names it and shows its output."""


# ------------------------------------------------------------------------------------------ commands


def split_commands(block: str) -> list[tuple[int, str]]:
    """The commands of a bash block with their line offsets: a line ending in a backslash keeps the next,
    a here-document stays with its command, blank and comment-only lines are dropped."""
    lines = block.splitlines()
    commands: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        start = i
        text = lines[i]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]  # bash reads the backslash-newline as a continuation
        heredoc = re.search(r"<<(-?)\s*(['\"]?)(\w+)\2", text)
        if heredoc:
            while i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
                if (lines[i].lstrip("\t") if heredoc.group(1) else lines[i]) == heredoc.group(3):
                    break
            else:
                raise ValueError(
                    f"here-document {heredoc.group(3)} opened at block line {start + 1} never ends"
                )
        i += 1
        if text.strip() and not text.lstrip().startswith("#"):
            commands.append((start, text))
    return commands


def _tail(path: Path, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text if len(text) <= chars else "…" + text[-chars:]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Background:
    where: str
    command: str
    proc: subprocess.Popen[bytes]
    log: Path
    notify: socket.socket | None  # kept open until it stops (it also says STOPPING=1 there)

    def exited(self) -> str:
        return (
            f"{self.where}: `{self.command}` (in the background) exited with status {self.proc.returncode} "
            "before the document ended; its output:\n" + _tail(self.log)
        )


@dataclass
class DocRun:
    """Runs one document's commands in ``work``; the bash blocks' sybil evaluator."""

    doc: str
    work: Path
    logs: Path
    out: IO[str]
    env: dict[str, str] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)
    count: int = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def evaluate(self, example: Example) -> None:
        first_line = example.line + 1  # example.line is the fence's
        for offset, command in split_commands(example.parsed):
            self.run(f"{self.doc}:{first_line + offset}", command)

    def run(self, where: str, command: str) -> None:
        self.check_background()
        if INSTALLS.search(command):
            raise CommandFailed(
                f"{where}: `{command}` installs or builds the environment, which the docs test shares with "
                'the tests; mark its block <!-- skip: next "why" --> (the test runs in what make setup made)'
            )
        if re.match(r"\s*(cd|export|source|\.)\s", command):
            raise CommandFailed(
                f"{where}: `{command}` changes the shell, but each command runs in its own bash here; "
                "write the docs without it (absolute or repository-relative paths, VAR=value cmd)"
            )
        self.count += 1
        log = self.logs / f"{self.count:02d}.log"
        daemon = next((d for d in DAEMONS if re.search(d.pattern, command)), None)
        self.say(f"{where} $ {command}" + ("   [background]" if daemon else ""))
        start = time.monotonic()
        if daemon is not None:
            self.start_background(where, command, daemon, log)
        else:
            with log.open("wb") as f:
                try:
                    done = subprocess.run(
                        ["bash", "-e", "-o", "pipefail", "-c", command],
                        cwd=self.work,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        timeout=COMMAND_TIMEOUT_S,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise CommandFailed(
                        f"{where}: `{command}` did not finish within {COMMAND_TIMEOUT_S:.0f} s; its output:\n"
                        + _tail(log)
                    ) from exc
            if done.returncode != 0:
                raise CommandFailed(
                    f"{where}: `{command}` failed with exit status {done.returncode}; its output:\n"
                    + _tail(log)
                )
        self.say(f"    ok in {time.monotonic() - start:.1f} s")

    def start_background(self, where: str, command: str, daemon: Daemon, log: Path) -> None:
        env = dict(self.env)
        notify: socket.socket | None = None
        if daemon.ready == "notify":
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = self.logs / f"{self.count:02d}.notify"
            path.unlink(missing_ok=True)
            notify.bind(str(path))
            notify.settimeout(0.2)
            env["NOTIFY_SOCKET"] = str(path)
        port_given = re.search(r"--port[ =](\d+)", command)
        port = int(port_given.group(1)) if port_given else daemon.default_port
        with log.open("wb") as f:
            proc = subprocess.Popen(
                ["bash", "-c", "exec " + command],
                cwd=self.work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append(Background(where, command, proc, log, notify))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise CommandFailed(
                    f"{where}: `{command}` exited with status {proc.returncode} instead of running until "
                    "stopped; its output:\n" + _tail(log)
                )
            if notify is not None:
                try:
                    if b"READY=1" in notify.recv(4096).split(b"\n"):
                        return
                except TimeoutError:
                    pass
            elif daemon.ready == "port" and port is not None:
                if _port_open(port):
                    return
                time.sleep(0.2)
            else:
                time.sleep(1.0)
                if proc.poll() is None:
                    return
            if time.monotonic() > deadline:
                raise CommandFailed(
                    f"{where}: `{command}` was not ready within {READY_TIMEOUT_S:.0f} s; its output:\n"
                    + _tail(log)
                )

    def check_background(self) -> None:
        for b in self.background:
            if b.proc.poll() is not None:
                raise CommandFailed(b.exited())

    def stop_background(self) -> list[str]:
        """SIGTERM each background command, last started first; the problems of those that did not stop."""
        problems = []
        for b in reversed(self.background):
            if b.proc.poll() is not None:
                problems.append(b.exited())
                continue
            os.killpg(b.proc.pid, signal.SIGTERM)
            try:
                code = b.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(b.proc.pid, signal.SIGKILL)
                b.proc.wait()
                problems.append(
                    f"{b.where}: `{b.command}` did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM"
                )
                continue
            if code not in (0, -signal.SIGTERM):
                problems.append(
                    f"{b.where}: `{b.command}` stopped with status {code} after SIGTERM; its output:\n"
                    + _tail(b.log)
                )
            else:
                self.say(f"{b.where}: stopped `{b.command}`")
        for b in self.background:  # anything a stopped command left running in its session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(b.proc.pid, signal.SIGKILL)
            if b.notify is not None:
                b.notify.close()
        return problems


# ------------------------------------------------------------------------------------------- a document


def shared_folder() -> Path | None:
    """The workplace's shared/ (real speech data) that the docs reach as ../shared: beside the checkout, or
    beside a folder holding it (a git worktree)."""
    return next((p / "shared" for p in ROOT.parents if (p / "shared" / "data").is_dir()), None)


def prepare(work: Path) -> None:
    """Fill ``work``: the repository's files (as `git ls-files` lists them), ``.venv`` linking this one,
    and ``../shared`` beside it linking the shared folder where there is one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the work tree: a checkout would not have it
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name, follow_symlinks=False)
    (work / ".venv").symlink_to(Path(sys.prefix))
    shared = shared_folder()
    if shared is not None and not (work.parent / "shared").exists():
        (work.parent / "shared").symlink_to(shared)


def run_document(source: Path, folder: Path, out: IO[str]) -> None:
    """Run the bash blocks of the markdown file ``source`` in ``folder``/checkout (prepared here; each
    command's output in ``folder``/logs); raise CommandFailed at the first failure, after stopping the
    background commands."""
    doc = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else source.name
    work, logs = folder / "checkout", folder / "logs"
    work.mkdir(parents=True)
    logs.mkdir()
    prepare(work)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "VIRTUAL_ENV", "PYTHONPATH")}
    env["EDGEKWS_SHRINK"] = os.environ.get("EDGEKWS_SHRINK", SHRINK)
    runner = DocRun(doc, work, logs, out, env)
    document = Document.parse(str(source), CodeBlockParser("bash", runner.evaluate), SkipParser())
    runner.say(f"{doc} in {work} with EDGEKWS_SHRINK={env['EDGEKWS_SHRINK']!r}")
    start = time.monotonic()
    failure: CommandFailed | None = None
    try:
        for example in document:
            try:
                example.evaluate()
            except SkipTest as exc:
                runner.say(f"{doc}:{example.line} block not run: {exc}")
    except CommandFailed as exc:
        failure = exc
    finally:
        problems = runner.stop_background()
    if failure is not None:
        raise failure
    if problems:
        raise CommandFailed("\n".join(problems))
    runner.say(f"{doc}: {runner.count} commands passed in {time.monotonic() - start:.0f} s")


def _bring_loopback_up() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def main(argv: list[str]) -> int:
    """``python tests/test_docs.py DOC FOLDER [--netns]``: run one document in FOLDER/checkout (a new
    folder); exit 1 naming what failed."""
    doc, folder = Path(argv[0]).resolve(), Path(argv[1])
    if "--netns" in argv[2:]:
        _bring_loopback_up()
        print("in a network namespace of its own", flush=True)
    try:
        run_document(doc, folder, sys.stdout)
    except CommandFailed as exc:
        print(f"FAILED {exc}", flush=True)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- pytest


def _namespace_prefix() -> list[str]:
    """``unshare --net`` (with a user namespace when not root) if the kernel lets us make one, else []."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    prefix = ["unshare", "--net"] + (["--map-root-user"] if os.geteuid() != 0 else [])
    probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, check=False)
    return prefix if probe.returncode == 0 else []


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_work_as_written(doc: str, tmp_path: Path) -> None:
    """Every bash block of the document runs, in order, in a fresh folder; the first failure is named."""
    prefix = _namespace_prefix()
    command = [*prefix, sys.executable, __file__, str(ROOT / doc), str(tmp_path / "run")]
    if prefix:
        command.append("--netns")
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-12000:]
    print(report)  # the commands and their times (pytest -s, or -rA)


def test_split_commands() -> None:
    """Continuation lines join, here-documents stay whole, comments and blank lines go."""
    block = (
        "# a comment\n"
        "a --x 1   # trailing\n"
        "\n"
        "b \\\n"
        "    --y 2\n"
        "cat > f.toml <<'EOF'\n"
        "[k]\n"
        "# not a comment here\n"
        "EOF\n"
        "c\n"
    )
    assert split_commands(block) == [
        (1, "a --x 1   # trailing"),
        (3, "b \\\n    --y 2"),
        (5, "cat > f.toml <<'EOF'\n[k]\n# not a comment here\nEOF"),
        (9, "c"),
    ]
    with pytest.raises(ValueError, match="never ends"):
        split_commands("cat <<EOF\nno end\n")


@pytest.mark.parametrize(
    "command",
    ["make setup", "sudo apt install espeak-ng", "python3.11 -m venv .venv && .venv/bin/pip install -e .",
     ".venv/bin/python -m pip install x", "true; make demo"],
)  # fmt: skip
def test_installs_are_refused_unless_skipped(command: str, tmp_path: Path) -> None:
    """A command that would install into the shared environment stops the run before it runs."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"```bash\n{command}\n```\n")
    with pytest.raises(CommandFailed, match="installs or builds the environment"):
        run_document(doc, tmp_path / "run", io.StringIO())
    assert not INSTALLS.search(".venv/bin/edgekws data synth --task digits --out data/make-demo")


def test_the_first_failing_command_is_named_and_ends_the_document(tmp_path: Path) -> None:
    """The first failing command stops the run, named with its line and output; skipped blocks don't run."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        '<!-- skip: next "not here" -->\n```bash\ntouch skipped\n```\n\n'
        "```bash\ntouch first\nls no-such-file   # fails\ntouch after\n```\n"
    )
    out = io.StringIO()
    with pytest.raises(
        CommandFailed, match=r"doc\.md:8: `ls no-such-file   # fails` failed with exit status 2"
    ):
        run_document(doc, tmp_path / "run", out)
    assert "doc.md:2 block not run: not here" in out.getvalue()
    work = tmp_path / "run/checkout"
    assert (work / "first").exists() and not (work / "skipped").exists() and not (work / "after").exists()


def test_background_commands_wait_until_ready_and_are_stopped_or_fail(tmp_path: Path) -> None:
    """A broker starts in the background, the next command finds it listening, and it is stopped at the
    end; one that exits at once (its --dir is a file) fails the run with its output."""
    port = free_port()
    doc = tmp_path / "doc.md"
    doc.write_text(
        f"```bash\n.venv/bin/edgekws fleet broker --dir b --port {port}\n"
        f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'\n```\n"
    )
    out = io.StringIO()
    run_document(doc, tmp_path / "ok", out)
    assert f"doc.md:2: stopped `.venv/bin/edgekws fleet broker --dir b --port {port}`" in out.getvalue()
    doc.write_text(
        f"```bash\ntouch f\n.venv/bin/edgekws fleet broker --dir f --port {port}\ntouch after\n```\n"
    )
    with pytest.raises(CommandFailed, match=r"doc\.md:3: .* exited with status 2 instead of running until"):
        run_document(doc, tmp_path / "bad", io.StringIO())
    assert not (tmp_path / "bad/checkout/after").exists()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
