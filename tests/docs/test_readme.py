"""The README's code, run as a user would run it, so that a quickstart cannot rot: the Python
producer and consumer in two processes (a record's and a stream's), the C++ program compiled and
run, the console
transcripts rerun and compared (tools/readme_transcripts.py: volatile parts masked), the
prerequisites it states against what tools/prereqs.py computes. Blocks are found by their
marker, `<!-- readme-test: ROLE -->`; an unmarked Python or C++ block is an error."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xshm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import prereqs  # noqa: E402
import readme_transcripts as rt  # noqa: E402

README = (ROOT / "README.md").read_text()


def code(role: str, name: str, segment: str = "sensors") -> str:
    """The block marked `role`, its segment renamed from `segment` to `name` (so a run never
    touches a real /sensors or /events, and runs never meet)."""
    body = rt.block(README, role).body
    assert f'"{segment}"' in body, f"the {role} block no longer names its segment '{segment}'"
    return body.replace(f'"{segment}"', f'"{name}"')


def test_every_code_block_is_run() -> None:
    runnable = {"python", "cpp", "console", "rust"}
    unmarked = [b.body[:60] for b in rt.blocks(README) if b.lang in runnable and not b.role]
    assert not unmarked, (
        f"README blocks no test runs (mark them <!-- readme-test: ... -->): {unmarked}"
    )
    roles = [b.role for b in rt.blocks(README) if b.role]
    expected = ["python producer", "python consumer", "cpp program", "transcript setup"]
    expected += ["stream producer", "stream consumer", "work queue", "frames", "cpp stream program"]
    expected += ["asyncio", "hand over", "bridge", "rust producer", "rust consumer"]
    expected += ["rust stream producer", "rust stream consumer"]
    assert sorted(roles) == sorted([*expected, "transcript"])


def _consumer_beside_producer(consumer: list[str], producer: list[str]) -> str:
    """Starts the consumer, then the producer beside it; both must exit 0 with nothing on
    stderr (the consumer leaving its loop on its own). Returns the consumer's output."""
    c, p = (
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in (consumer, producer)
    )
    try:
        _, p_err = p.communicate(timeout=120)
        c_out, c_err = c.communicate(timeout=120)
    finally:
        for proc in (p, c):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert p.returncode == 0 and p_err == "", p_err
    assert c.returncode == 0 and c_err == "", c_err
    return c_out


def _python(src: str) -> list[str]:
    return [sys.executable, "-c", src]


def test_python_quickstart_producer_and_consumer(seg_name: str) -> None:
    c_out = _consumer_beside_producer(
        _python(code("python consumer", seg_name)), _python(code("python producer", seg_name))
    )
    lines = c_out.strip().splitlines()
    assert len(lines) >= 2, c_out
    counters = [int(ln.split()[0]) for ln in lines]
    assert counters == sorted(set(counters)), "records arrive in order, each once"
    assert re.fullmatch(r"21 zeroed \[0\. 0\. 0\.\]", lines[-1]), lines[-1]
    assert all(re.match(r"\d+ reading \d+ \[", ln) for ln in lines[:-1]), lines
    assert not os.path.exists(f"/dev/shm/{seg_name}"), "the producer removes its segment"


def test_python_producer_can_be_rerun(seg_name: str) -> None:
    """Interrupted before its unlink, the producer leaves the segment; a rerun attaches."""
    src = code("python producer", seg_name).replace("m.unlink()", "pass  # interrupted")
    first = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert os.path.exists(f"/dev/shm/{seg_name}")
    again = subprocess.run(
        [sys.executable, "-c", code("python producer", seg_name)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def _stream_lines(out: str) -> tuple[list[int], int]:
    """The stream consumer's output: the sequence numbers of "SEQ event K" lines (K checked
    against SEQ), and its last line's count of lost messages."""
    lines = out.strip().splitlines()
    assert lines and lines[-1].startswith("lost "), out
    seqs = []
    for ln in lines[:-1]:
        m = re.fullmatch(r"(\d+) event (\d+)", ln)
        assert m, ln
        seqs.append(int(m.group(1)))
        assert int(m.group(2)) == int(m.group(1)) % 100, ln
    return seqs, int(lines[-1].split()[1])


def test_stream_quickstart_producer_and_consumer(seg_name: str) -> None:
    """The consumer started first (it waits for the stream), the producer beside it: every
    message, in order, each once, none lost; the consumer leaves on its own and removes it."""
    c_out = _consumer_beside_producer(
        _python(code("stream consumer", seg_name, "events")),
        _python(code("stream producer", seg_name, "events")),
    )
    assert _stream_lines(c_out) == (list(range(100)), 0), c_out
    assert not os.path.exists(f"/dev/shm/{seg_name}"), "the consumer removes the stream"


def test_stream_producer_can_be_rerun_and_the_consumer_come_after(seg_name: str) -> None:
    """Run twice with no consumer, the producer reuses the stream it left; a consumer started
    afterwards gets all 200 messages the ring kept, in order."""
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-c", code("stream producer", seg_name, "events")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0 and r.stderr == "", r.stderr
    assert os.path.exists(f"/dev/shm/{seg_name}")
    c = subprocess.run(
        [sys.executable, "-c", code("stream consumer", seg_name, "events")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert c.returncode == 0 and c.stderr == "", c.stderr
    assert _stream_lines(c.stdout) == (list(range(200)), 0), c.stdout
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_cpp_quickstart_is_a_program(seg_name: str, tmp_path: Path) -> None:
    gxx = shutil.which("g++")
    assert gxx, "g++ is needed (make test installs it)"
    src = tmp_path / "quickstart.cpp"
    src.write_text(code("cpp program", seg_name))
    exe = tmp_path / "quickstart"
    flags = [
        "-std=c++17",
        f"-I{ROOT / 'cpp' / 'include'}",
        "-pthread",
        "-Wall",
        "-Wextra",
        "-Werror",
    ]
    build = subprocess.run([gxx, *flags, str(src), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "seq 2 counter 2 first value 2 message hello\n"
    assert not os.path.exists(f"/dev/shm/{seg_name}"), "the program removes its segment"


def test_rust_quickstart_producer_and_consumer(seg_name: str, tmp_path: Path) -> None:
    """The four Rust blocks, built as the binaries of one crate that depends on rust/xshm (the
    workspace's lock file pins the same dependency versions), run as two pairs of processes:
    the record's producer and consumer, then the stream's."""
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed (make test installs Rust first)"
    crate = tmp_path / "quickstart"
    (crate / "src" / "bin").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "quickstart"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f'[dependencies]\nxshm = {{ path = "{ROOT / "rust" / "xshm"}" }}\n\n[workspace]\n'
    )
    shutil.copy(ROOT / "rust" / "Cargo.lock", crate / "Cargo.lock")
    for role in ("producer", "consumer"):
        (crate / "src" / "bin" / f"{role}.rs").write_text(code(f"rust {role}", seg_name, "prices"))
        block = code(f"rust stream {role}", f"{seg_name}-s", "events")
        (crate / "src" / "bin" / f"stream_{role}.rs").write_text(block)
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")}
    build = subprocess.run(
        [cargo, "build", "-q", "--bins"], cwd=crate, env=env, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    exe = tmp_path / "target" / "debug"
    c_out = _consumer_beside_producer([str(exe / "consumer")], [str(exe / "producer")])
    lines = c_out.strip().splitlines()
    assert len(lines) >= 2, c_out
    counters = [int(ln.split()[0]) for ln in lines]
    assert counters == sorted(set(counters)), "records arrive in order, each once"
    assert lines[-1] == "20 tick 20 [20.0, 40.0, 60.0]", lines[-1]
    assert all(re.fullmatch(r"(\d+) tick \1 \[.*\]", ln) for ln in lines), lines
    assert not os.path.exists(f"/dev/shm/{seg_name}"), "the producer removes its segment"
    try:
        c_out = _consumer_beside_producer(
            [str(exe / "stream_consumer")], [str(exe / "stream_producer")]
        )
        assert _stream_lines(c_out) == (list(range(100)), 0), c_out
        assert not os.path.exists(f"/dev/shm/{seg_name}-s"), "the consumer removes the stream"
    finally:
        if os.path.exists(f"/dev/shm/{seg_name}-s"):
            os.unlink(f"/dev/shm/{seg_name}-s")


STREAM_CPP = r"""
#include <xshm/xshm.hpp>

#include <chrono>
#include <cstdio>
#include <string>

int main(int, char** argv) {
  xshm::StreamOptions opt;
  opt.capacity = 16;
  opt.max_bytes = 64;
  opt.backpressure = xshm::Backpressure::block;
  auto s = xshm::Stream::create(argv[1], opt);
  auto o = xshm::Stream::open(argv[1]);
  auto r = o.reader();
  s.send("hello");
  const bool ok = s.try_send("again").has_value();
  const std::string a = "a", b = "b";
  s.send_many({{a.data(), a.size()}, {b.data(), b.size()}});
  const xshm::Message m = r.recv(std::chrono::seconds(1));
  const auto t = r.try_recv();
  const auto rest = r.recv_many(8, std::chrono::seconds(1));
  std::printf("%llu %s %d %zu %zu\n", static_cast<unsigned long long>(m.seq),
              std::string(m.data.begin(), m.data.end()).c_str(), ok ? 1 : 0, t ? t->data.size() : 0,
              rest.size());
  xshm::Stream::unlink(argv[1]);
}
"""


def test_stream_cpp_names_are_the_headers(seg_name: str, tmp_path: Path) -> None:
    """The C++ names the Streams section gives exist as written: a program using each of them
    compiles against the header and runs."""
    para = " ".join(next(p for p in README.split("\n\n") if p.startswith("C++: ")).split())
    for name in (
        "`xshm::Stream::create(name, opt)`",
        "`xshm::StreamOptions`: `capacity`, `max_bytes`, `backpressure`",
        "`xshm::Stream::open(name)`",
        "`s.send(bytes)`",
        "`s.reader()`",
        "`r.recv(timeout)`",
        "`try_send`, `send_many`, `try_recv` and `recv_many`",
    ):
        assert name in para, (name, para)
    gxx = shutil.which("g++")
    assert gxx, "g++ is needed (make test installs it)"
    src = tmp_path / "stream.cpp"
    src.write_text(STREAM_CPP)
    exe = tmp_path / "stream"
    flags = ["-std=c++17", f"-I{ROOT / 'cpp' / 'include'}", "-pthread", "-Wall", "-Wextra"]
    build = subprocess.run(
        [gxx, *flags, "-Werror", str(src), "-o", str(exe)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(exe), seg_name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0 hello 1 5 2\n"
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_console_transcripts_are_what_the_commands_print(
    skip_or_fail: Callable[[str], None],
) -> None:
    try:
        rt.namespace_prefix()
        probe = subprocess.run(
            [*rt.namespace_prefix(), "sh", "-c", "mount -t tmpfs x /dev/shm"], capture_output=True
        )
    except RuntimeError as e:
        skip_or_fail(str(e))
    if probe.returncode != 0:
        skip_or_fail("no private mount namespace here (unshare -m / -rm refused)")
    shown, fresh = rt.run_readme_transcript(README)
    d = rt.diff(shown.body, fresh)
    assert d is None, f"README transcripts differ from a run (make readme rewrites them):\n{d}"


def test_masking_keeps_what_matters() -> None:
    """The comparison's negative control: masking hides ages, pids and timings, not content."""
    a = "created 338 ms ago by pid 23456\n snapshot  0.45 us  x  1.17 us  2.6x\ncounter 1234"
    b = "created 2.1 s ago by pid 99\n snapshot  0.5 us  x  11.9 us  23.8x\ncounter 1234"
    assert rt.masked(a) == rt.masked(b)
    assert rt.masked(a) != rt.masked(a.replace("1234", "1235"))
    assert rt.masked(a) != rt.masked(a.replace("snapshot", "publish"))


def test_the_casting_rule_is_as_the_readme_states(seg_name: str) -> None:
    """The casting paragraph's calls exist as written and do what it says: by default another
    dtype is refused, by publish and by `rec.values = x` alike; `casting=` converts, in publish
    and in `rec.set_values(x, casting=...)`."""
    para = next(p for p in README.split("\n\n") if p.startswith("Types are not converted"))
    flat = " ".join(para.split())
    assert '`publish(values=..., casting="equiv")` by default' in flat
    assert (
        "`rec.values = x` in a write block copies `x` into the record under the same rule" in flat
    )
    assert '`rec.set_values(x, casting="safe")`' in flat
    for fn in (xshm.SharedMemoryManager.publish, xshm.Record.set_values):
        assert inspect.signature(fn).parameters["casting"].default == "equiv", fn
    with xshm.SharedMemoryManager.create(seg_name, shape=(3,)) as m:
        x = np.arange(3)  # int64 into float64
        with pytest.raises(xshm.DtypeError, match="casting='safe'"):
            m.publish(values=x)
        with pytest.raises(xshm.DtypeError, match="casting='safe'"), m.write() as rec:
            rec.values = x
        assert m.seq == 0
        with m.write() as rec:
            rec.set_values(x, casting="safe")
        assert m.read().values.tolist() == [0.0, 1.0, 2.0]
        m.publish(values=x + 1, casting="safe")
        assert m.read().values.tolist() == [1.0, 2.0, 3.0]


def test_prerequisites_stated_are_the_computed_ones(skip_or_fail: Callable[[str], None]) -> None:
    if shutil.which("cargo") is None:
        skip_or_fail("cargo is needed to compute the Rust versions the crates ask")
    demo = prereqs.locked_dependencies_need("xshm-text-py")
    full = prereqs.locked_dependencies_need(None)
    assert demo and full
    flat = " ".join(README.split())
    assert f"Rust ≥ {prereqs.dotted(demo[0])} (asked by the locked pyo3)" in flat, demo
    assert demo[1].startswith("pyo3"), demo
    assert f"Rust ≥ {prereqs.dotted(full[0])} (asked by loom's `{full[1]}`)" in flat, full
    go = re.search(r"(?m)^go (\S+)", (ROOT / "tests/spec_reader/go.mod").read_text())
    assert go and f"Go ≥ {go.group(1)} (`tests/spec_reader/go.mod`)" in flat
    packages = ["libgtest-dev", "valgrind", "tmux", "clang", "libclang-rt-14-dev", "clang-format"]
    assert all(p in flat for p in packages)


def test_work_queue_quickstart(seg_name: str, tmp_path: Path) -> None:
    """Two worker processes in a group do the 10 jobs between them, each exactly once."""
    script = tmp_path / "work_queue.py"
    script.write_text(code("work queue", seg_name, "jobs"))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == f"jobs done: {list(range(10))}\nworkers took 12 messages\n", r.stdout
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_frames_quickstart(seg_name: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", code("frames", seg_name, "camera")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == "0 (480, 640) 1.0 True\n"
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_cpp_stream_program(seg_name: str, tmp_path: Path) -> None:
    gxx = shutil.which("g++")
    assert gxx is not None, "g++ is needed (make setup installs it)"
    src = tmp_path / "stream.cpp"
    src.write_text(code("cpp stream program", seg_name, "orders"))
    exe = tmp_path / "stream"
    flags = [
        "-std=c++17",
        f"-I{ROOT / 'cpp' / 'include'}",
        "-pthread",
        "-Wall",
        "-Wextra",
        "-Werror",
    ]
    build = subprocess.run([gxx, *flags, str(src), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "order 42 (seq 0)\n"
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_asyncio_quickstart(seg_name: str, tmp_path: Path) -> None:
    """The coroutines wait on a record and a stream at once, woken by another process."""
    script = tmp_path / "aio_quickstart.py"
    body = code("asyncio", f"{seg_name}-t", "ticks").replace('"orders"', f'"{seg_name}-o"')
    script.write_text(body)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert [x for x in lines if x.startswith("order")] == ["order 1", "order 2", "order 3"]
    assert "tick 3" in lines and len(lines) == 4, r.stdout
    assert not os.path.exists(f"/dev/shm/{seg_name}-t")
    assert not os.path.exists(f"/dev/shm/{seg_name}-o")


def test_hand_over_quickstart(seg_name: str) -> None:
    """JAX and pyarrow take the snapshot without a copy."""
    r = subprocess.run(
        [sys.executable, "-c", code("hand over", seg_name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == "(480, 640) float32 True\n1 frame 1 480\n", r.stdout
    assert not os.path.exists(f"/dev/shm/{seg_name}")


def test_bridge_quickstart(seg_name: str, skip_or_fail: Callable[[str], None]) -> None:
    """An export and a mirror over loopback carry the record: the mirror reads the update."""
    if importlib.util.find_spec("zenoh") is None:
        skip_or_fail("eclipse-zenoh is not installed (pip install 'xshm[bridge]')")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    body = code("bridge", seg_name).replace('"sensors-copy"', f'"{seg_name}-copy"')
    assert "tcp/127.0.0.1:7447" in body
    body = body.replace("tcp/127.0.0.1:7447", f"tcp/127.0.0.1:{port}")
    r = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == f"2 over the wire [4. 5. 6.] {seg_name}\n", r.stdout
    assert not os.path.exists(f"/dev/shm/{seg_name}")
    assert not os.path.exists(f"/dev/shm/{seg_name}-copy")
