"""Transfers over a link with latency: `rtun send` beside `ssh HOST cat`, scp and tar, server to
laptop, through the real sshd and a delay line (benchmarks/delayline.py) as the laptop ssh's
ProxyCommand.

Each round trip and in-flight bound gets one SSH connection from the laptop through the delay
line: the rtun forward (an interactive login, as a user's) and the ControlMaster the other tools
reuse, so every command is one channel of the same connection and none pays a handshake. The
delay line's bound stands for the server's TCP send buffer: 2.7 MiB is what Linux's default
4 MiB tcp_wmem maximum left in flight in issue 11's measurements, 32 MiB a raised one. At 0 ms
nothing waits for an ack, so the bound changes nothing there and 0 ms runs once.

- one big file: rtun send, rtun send --channels 1, ssh HOST cat FILE > local, scp HOST:FILE
  local, and the SSH connection's ceiling: N concurrent `ssh HOST dd` of 1/N each over the
  same connection (what the connection itself carries: issue 11's reference).
- a tree of small files: rtun send, rtun send --channels 1, ssh HOST 'tar c' | tar x, scp -r.
  scp (SFTP) pays round trips per file (about 4), so above 0 ms it copies a sample of the files.
- round trips of rtun ping, notify and a 1-byte send at 200 ms, from process start to exit,
  less the same command's time through a 0 ms link measured in alternation (start-up, local work).

Settings (environment): RTUN_BENCH_LINK_MB (256), RTUN_BENCH_LINK_FILES (1000),
RTUN_BENCH_LINK_FILE_KB (100), RTUN_BENCH_LINK_RTTS (0,40,100), RTUN_BENCH_LINK_INFLIGHT
(2.7M,32M), RTUN_BENCH_LINK_PING_RTT (200; 0 skips), RTUN_BENCH_LINK_REPEAT (1; runs above 0 ms),
RTUN_BENCH_LINK_REPEAT_AT_0 (3), RTUN_BENCH_LINK_PING_REPEAT (5), RTUN_BENCH_LINK_SCP_SAMPLE (20
files), RTUN_BENCH_LINK_CEILING (channels; auto: one per 2 MiB of bound, 4 to 16; 0 skips),
RTUN_BENCH_SEND_ARGS (extra `rtun send` options, e.g. "--channels 4"),
RTUN_BENCH_LINK_ONE_CHANNEL_ARGS (the one-channel baseline's options: "--channels 1"; empty skips),
RTUN_BENCH_LINK_FIXED (4,8,16: fixed channel counts whose best is the big file's baseline above
0 ms, issue 20's: rtun's own choice >= 0.9x of it at 100 ms with large buffers; empty skips).
Destinations are on tmpfs, as bench_send's: the link is measured, not the disk.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

from common import Result
from delayline import DEFAULT_INFLIGHT, parse_size
from rig import RTUN_SCRIPT, Link, Rig

MIB = 1024**2
KIB = 1024
BIG_MIB = int(os.environ.get("RTUN_BENCH_LINK_MB", "256"))
TREE_FILES = int(os.environ.get("RTUN_BENCH_LINK_FILES", "1000"))
TREE_FILE_KIB = int(os.environ.get("RTUN_BENCH_LINK_FILE_KB", "100"))
RTTS = [float(x) for x in os.environ.get("RTUN_BENCH_LINK_RTTS", "0,40,100").split(",")]
INFLIGHTS = [parse_size(x) for x in os.environ.get("RTUN_BENCH_LINK_INFLIGHT", "2.7M,32M").split(",")]
PING_RTT = float(os.environ.get("RTUN_BENCH_LINK_PING_RTT", "200"))
REPEAT = int(os.environ.get("RTUN_BENCH_LINK_REPEAT", "1"))
REPEAT_AT_0 = int(os.environ.get("RTUN_BENCH_LINK_REPEAT_AT_0", "3"))
PING_REPEAT = int(os.environ.get("RTUN_BENCH_LINK_PING_REPEAT", "5"))
SCP_SAMPLE = int(os.environ.get("RTUN_BENCH_LINK_SCP_SAMPLE", "20"))
CEILING = os.environ.get("RTUN_BENCH_LINK_CEILING", "auto")
SEND_ARGS = shlex.split(os.environ.get("RTUN_BENCH_SEND_ARGS", ""))
ONE_CHANNEL_ARGS = shlex.split(os.environ.get("RTUN_BENCH_LINK_ONE_CHANNEL_ARGS", "--channels 1"))
FIXED = [int(n) for n in os.environ.get("RTUN_BENCH_LINK_FIXED", "4,8,16").split(",") if n]
GOAL_RTT = 100.0  # issue 11's goals for parallel channels are set at a 100 ms round trip
INFO = "for information"


def _mib(size: int) -> str:
    return f"{size / MIB:.3g} MiB"


def _ceiling_channels(inflight: int) -> int:
    if CEILING != "auto":
        return int(CEILING)
    return max(4, min(16, math.ceil(inflight / (2 * MIB))))  # an SSH channel's window: ~2 MiB


class Files:
    """What the server holds: one big file, a tree, scp's sample of the tree, a 1-byte file."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.big = work / "big.bin"
        block = os.urandom(16 * MIB)
        with open(self.big, "wb") as f:
            for offset in range(0, BIG_MIB * MIB, len(block)):
                f.write(block[: BIG_MIB * MIB - offset])
        self.tree = work / "tree"
        self.sample = work / "sample"
        for top, count in ((self.tree, TREE_FILES), (self.sample, min(SCP_SAMPLE, TREE_FILES))):
            for i in range(count):
                sub = top / f"d{i // 100:02d}"
                sub.mkdir(parents=True, exist_ok=True)
                (sub / f"f{i:04d}.bin").write_bytes(os.urandom(TREE_FILE_KIB * KIB))
        self.tiny = work / "one-byte.txt"
        self.tiny.write_bytes(b"x")
        os.sync()  # no run pays for the writeback of the test files


def _run(argv: Union[str, List[str]], **kwargs: Any) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, **kwargs)


def _files_under(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


class Transfers:
    """The commands compared on one link; each returns after checking what arrived."""

    def __init__(self, link: Link, files: Files, dest: Path, save_dir: Path) -> None:
        self.link = link
        self.files = files
        self.dest = dest
        self.save_dir = save_dir

    def clear(self) -> None:
        for path in (self.dest, self.save_dir):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()

    def _rtun_send(self, source: Path, options: List[str]) -> None:
        _run(
            [RTUN_SCRIPT, "send", "-q", *options, str(source)], env=self.link.env(), stdout=subprocess.DEVNULL
        )

    def _check_size(self, path: Path) -> None:
        if path.stat().st_size != self.files.big.stat().st_size:
            raise RuntimeError(f"{path} has {path.stat().st_size} bytes, not the file's")

    def _check_tree(self, path: Path, expected: int) -> None:
        if _files_under(path) != expected:
            raise RuntimeError(f"{path} has {_files_under(path)} files, not {expected}")

    def rtun_big(self, options: List[str]) -> None:
        self._rtun_send(self.files.big, options)
        self._check_size(self.save_dir / self.files.big.name)

    def cat_big(self) -> None:
        with open(self.dest / "big.bin", "wb") as out:
            _run(self.link.ssh + [self.link.host, f"cat {shlex.quote(str(self.files.big))}"], stdout=out)
        self._check_size(self.dest / "big.bin")

    def scp_big(self) -> None:
        _run(self.link.scp + [f"{self.link.host}:{self.files.big}", str(self.dest)])
        self._check_size(self.dest / "big.bin")

    def ceiling(self, channels: int) -> None:
        """`ssh HOST dd` of 1/channels of the file each, all at once over the one connection."""
        part = math.ceil(BIG_MIB / channels)
        parts = [self.dest / f"part{i}" for i in range(channels)]
        outs = [open(p, "wb") for p in parts]
        try:
            running = [
                subprocess.Popen(
                    self.link.ssh
                    + [
                        self.link.host,
                        f"dd if={shlex.quote(str(self.files.big))} bs=1M "
                        f"skip={i * part} count={part} status=none",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                )
                for i, out in enumerate(outs)
            ]
            if any(p.wait() != 0 for p in running):
                raise RuntimeError("a concurrent ssh HOST dd failed")
        finally:
            for out in outs:
                out.close()
        if sum(p.stat().st_size for p in parts) != self.files.big.stat().st_size:
            raise RuntimeError("the concurrent parts do not add up to the file")

    def rtun_tree(self, options: List[str]) -> None:
        self._rtun_send(self.files.tree, options)
        self._check_tree(self.save_dir / "tree", TREE_FILES)

    def tar_tree(self) -> None:
        remote = f"tar cf - -C {shlex.quote(str(self.files.work))} tree"
        _run(
            f"{shlex.join(self.link.ssh)} {self.link.host} {shlex.quote(remote)} | "
            f"tar xf - -C {shlex.quote(str(self.dest))}",
            shell=True,
        )
        self._check_tree(self.dest / "tree", TREE_FILES)

    def scp_tree(self, top: Path, expected: int) -> None:
        _run(self.link.scp + ["-r", f"{self.link.host}:{top}", str(self.dest)])
        self._check_tree(self.dest / top.name, expected)


def _medians(runs: Dict[str, Callable[[], None]], repeat: int, clear: Callable[[], None]) -> Dict[str, float]:
    """Median wall time of each command, the commands taken in turn in every round."""
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            clear()
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    clear()
    return {name: statistics.median(t) for name, t in times.items()}


def _link_results(rig: Rig, files: Files, dest: Path, rtt: float, inflight: int) -> List[Result]:
    link = rig.link(f"l{rtt:g}-{inflight}", rtt, inflight)
    channels = _ceiling_channels(inflight)
    sample = rtt > 0 and SCP_SAMPLE < TREE_FILES
    scp_top, scp_files = (files.sample, min(SCP_SAMPLE, TREE_FILES)) if sample else (files.tree, TREE_FILES)
    repeat = REPEAT_AT_0 if rtt == 0 else REPEAT
    try:
        transfers = Transfers(link, files, dest, rig.save_dir)
        runs = {
            "rtun": lambda: transfers.rtun_big(SEND_ARGS),
            "cat": transfers.cat_big,
            "scp": transfers.scp_big,
            "rtun tree": lambda: transfers.rtun_tree(SEND_ARGS),
            "tar tree": transfers.tar_tree,
            "scp tree": lambda: transfers.scp_tree(scp_top, scp_files),
        }
        if ONE_CHANNEL_ARGS:
            runs["rtun 1"] = lambda: transfers.rtun_big(ONE_CHANNEL_ARGS)
            runs["rtun 1 tree"] = lambda: transfers.rtun_tree(ONE_CHANNEL_ARGS)
        if channels:
            runs["ceiling"] = lambda: transfers.ceiling(channels)
        for n in FIXED if rtt > 0 else []:
            runs[f"rtun --channels {n}"] = lambda n=n: transfers.rtun_big(["--channels", str(n)])
        seconds = _medians(runs, repeat, transfers.clear)
    finally:
        link.close()
    where = f"{rtt:g} ms" if rtt == 0 else f"{rtt:g} ms, {_mib(inflight)} in flight"
    of = f"median of {repeat}" if repeat > 1 else "one run"
    return _report(
        seconds,
        f"{BIG_MIB} MiB file at {where} ({of})",
        f"{TREE_FILES} x {TREE_FILE_KIB} KiB at {where} ({of})",
        goals=rtt == GOAL_RTT,
        large=inflight > DEFAULT_INFLIGHT,
        channels=channels,
        scp_name=f"scp -r, {scp_files} of the files" if sample else "scp -r",
        scp_files=scp_files,
    )


def _report(
    s: Dict[str, float],
    big: str,
    tree: str,
    goals: bool,
    large: bool,
    channels: int,
    scp_name: str,
    scp_files: int,
) -> List[Result]:
    """Rows of one link. Issue 11's goals, at 100 ms: at least 0.9x what the connection carries,
    and (where the server's buffers are larger) at least 3x one channel."""
    rtun = BIG_MIB / s["rtun"]
    cat = BIG_MIB / s["cat"]
    name = f"{big}: rtun send {shlex.join(SEND_ARGS)}".rstrip()
    results = [
        Result(name, rtun, "MiB/s", INFO, True, "scp", BIG_MIB / s["scp"]),
        Result(name, rtun, "MiB/s", INFO, True, "ssh HOST cat", cat),
    ]
    if "rtun 1" in s:
        one = BIG_MIB / s["rtun 1"]
        target = ">= 3x baseline" if goals and large else "about 1.3x (issue 11)" if goals else INFO
        results.append(
            Result(
                name,
                rtun,
                "MiB/s",
                target,
                rtun >= 3 * one or not (goals and large),
                f"rtun send {shlex.join(ONE_CHANNEL_ARGS)}",
                one,
            )
        )
    fixed = {name: BIG_MIB / t for name, t in s.items() if name.startswith("rtun --channels ")}
    if fixed:
        best = max(fixed, key=lambda name: fixed[name])
        results.append(
            Result(
                name,
                rtun,
                "MiB/s",
                ">= 0.9x baseline" if goals and large else INFO,
                rtun >= 0.9 * fixed[best] or not (goals and large),
                f"the best fixed count: {best} (of {', '.join(str(n) for n in FIXED)})",
                fixed[best],
            )
        )
    if channels:
        ceiling = BIG_MIB / s["ceiling"]
        results += [
            Result(
                name,
                rtun,
                "MiB/s",
                ">= 0.9x baseline" if goals else INFO,
                rtun >= 0.9 * ceiling or not goals,
                f"SSH connection ceiling, {channels} channels",
                ceiling,
            ),
            Result(
                f"{big}: SSH connection ceiling, {channels} concurrent ssh HOST dd of 1/{channels}",
                ceiling,
                "MiB/s",
                INFO,
                True,
                "ssh HOST cat",
                cat,
            ),
        ]
    rtun_tree = TREE_FILES / s["rtun tree"]
    name = f"{tree}: rtun send {shlex.join(SEND_ARGS)}".rstrip()
    results += [
        Result(
            name, rtun_tree, "files/s", INFO, True, "ssh HOST 'tar c' | tar x", TREE_FILES / s["tar tree"]
        ),
        Result(name, rtun_tree, "files/s", INFO, True, scp_name, scp_files / s["scp tree"]),
    ]
    if "rtun 1 tree" in s:
        results.append(
            Result(
                name,
                rtun_tree,
                "files/s",
                INFO,
                True,
                f"rtun send {shlex.join(ONE_CHANNEL_ARGS)}",
                TREE_FILES / s["rtun 1 tree"],
            )
        )
    return results


def _round_trips(rig: Rig, files: Files) -> List[Result]:
    """ping, notify and a 1-byte send through a 0 ms link and a PING_RTT link, in alternation."""
    near = rig.link("near", 0, INFLIGHTS[0])
    far = rig.link("far", PING_RTT, INFLIGHTS[0])
    commands = {
        "rtun ping": [RTUN_SCRIPT, "ping"],
        "rtun notify": [RTUN_SCRIPT, "notify", "-t", "bench", "link"],
        "rtun send of a 1-byte file": [RTUN_SCRIPT, "send", "-q", *SEND_ARGS, str(files.tiny)],
    }
    times: Dict[Tuple[str, str], List[float]] = {}
    bursts: Dict[str, List[int]] = {name: [] for name in commands}

    def clear() -> None:
        shutil.rmtree(rig.save_dir, ignore_errors=True)
        rig.save_dir.mkdir()

    try:
        for round_ in range(PING_REPEAT + 1):  # the first round warms caches and is dropped
            for name, argv in commands.items():
                for link in (near, far):
                    clear()
                    before = link.counts() if link is far else None
                    began = time.perf_counter()
                    _run(argv, env=link.env(), stdout=subprocess.DEVNULL)
                    took = time.perf_counter() - began
                    if round_:
                        times.setdefault((name, "far" if link is far else "near"), []).append(took)
                    if before is not None and round_:
                        # sshd sends the channel's close as the client exits: counted here as a
                        # rule, and the laptop's reply to it may make one burst more.
                        after = link.counts()
                        bursts[name].append(after["received"]["bursts"] - before["received"]["bursts"])
    finally:
        clear()
        near.close()
        far.close()
    results = []
    of = f"median of {PING_REPEAT}"
    for name in commands:
        near_s = statistics.median(times[(name, "near")])
        far_s = statistics.median(times[(name, "far")])
        trips = (far_s - near_s) / (PING_RTT / 1000)
        results += [
            Result(
                f"{name} at {PING_RTT:g} ms, process start to exit ({of})",
                far_s,
                "s",
                INFO,
                True,
                "the same at 0 ms: start-up and local work",
                near_s,
            ),
            Result(
                f"{name} at {PING_RTT:g} ms: round trips after process start "
                f"(server-to-laptop bursts: {statistics.median(bursts[name]):g}, the close included)",
                trips,
                "round trips",
                "<= 2 (the floor)",
                trips < 2.5,
            ),
        ]
    return results


def measure() -> List[Result]:
    dest_root = Path(tempfile.mkdtemp(prefix="rtun-link-", dir="/dev/shm"))
    try:
        with Rig(dest_root / "saved", notifications=True, forward=False) as rig:
            files = Files(Path(tempfile.mkdtemp(prefix="work", dir=rig.root)))
            results: List[Result] = []
            for rtt in RTTS:
                for inflight in INFLIGHTS[:1] if rtt == 0 else INFLIGHTS:
                    results += _link_results(rig, files, dest_root / "dest", rtt, inflight)
            if PING_RTT:
                results += _round_trips(rig, files)
            return results
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)
