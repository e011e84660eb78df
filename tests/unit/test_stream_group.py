"""Reader groups (work queues) from Python: members of one named group share a cursor, so each
message goes to exactly one of them, while a reader outside the group still gets every message;
the group's cursor outlives its members; a group with a member attached gates a 'block' writer,
one without does not; the table's limits and bad names are typed errors. Groups across
processes: tests/cross_process/test_streams.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import xshm


@pytest.fixture
def stream(seg_name: str) -> Iterator[xshm.Stream]:
    with xshm.Stream.create(seg_name, 8, max_bytes=16, max_groups=2) as s:
        yield s
        s.unlink()


def _group(s: xshm.Stream, name: str) -> dict[str, object]:
    (g,) = [g for g in s.groups() if g["name"] == name]
    return g


def test_each_message_goes_to_exactly_one_member(stream: xshm.Stream) -> None:
    a = stream.reader(group="workers")
    b = stream.reader(group="workers")
    everyone = stream.reader()
    assert (a.group, b.group, everyone.group) == ("workers", "workers", None)
    got: dict[str, list[int]] = {"a": [], "b": []}
    for k in range(40):
        stream.send(k.to_bytes(2, "little"))
        taker, key = (a, "a") if k % 3 else (b, "b")
        m = taker.recv(timeout=5)
        got[key].append(int.from_bytes(m.data, "little"))
        assert [x.seq for x in everyone.recv_many(8, timeout=5)] == [k]
    assert sorted(got["a"] + got["b"]) == list(range(40)), "a message lost or given twice"
    assert got["a"] == sorted(got["a"]) and got["b"] == sorted(got["b"])
    assert (a.received, b.received) == (len(got["a"]), len(got["b"]))
    g = _group(stream, "workers")
    assert (g["received"], g["lost"], g["skipped"], g["cursor"], g["members"]) == (40, 0, 0, 40, 2)
    assert g["received"] + g["lost"] + g["skipped"] == g["cursor"] - g["start"]
    assert a.cursor == b.cursor == 40 and a.lag == 0
    assert a.try_recv() is None and b.try_recv() is None


def test_the_group_cursor_outlives_its_members(stream: xshm.Stream) -> None:
    with stream.reader(group="log") as r:
        stream.send(b"0")
        stream.send(b"1")
        assert r.recv(timeout=5).data == b"0"
    stream.send(b"2")  # no member: the group gates nothing and keeps its cursor
    g = _group(stream, "log")
    assert (g["members"], g["cursor"], g["lag"]) == (0, 1, 2)
    with stream.reader("latest", group="log") as back:  # start applies only at creation
        assert [m.data for m in back.recv_many(8, timeout=5)] == [b"1", b"2"]
    assert _group(stream, "log")["received"] == 3


def test_a_group_with_a_member_gates_a_block_writer(seg_name: str) -> None:
    with xshm.Stream.create(seg_name, 2, max_bytes=8) as s:
        r = s.reader(group="slow")
        s.send(b"a")
        s.send(b"b")
        with pytest.raises(xshm.StreamFullError, match="slow"):
            s.send(b"c", timeout=0.05)
        assert r.recv(timeout=5).data == b"a"
        s.send(b"c", timeout=5)
        r.close()
        for k in range(5):  # no member: nothing gates
            s.send(bytes([k]), timeout=0)
        back = s.reader(group="slow")
        # Lapped while away: it resumes past the slot the next send takes (LAYOUT.md 26.3),
        # and counts the 6 numbers it missed, 1 to 6, as lost.
        assert back.recv(timeout=5).seq == 7
        assert back.lost == 6
        g = _group(s, "slow")
        assert g["received"] + g["lost"] + g["skipped"] == g["cursor"] - g["start"]
        back.close()
        s.unlink()


def test_group_limits_and_names_are_typed_errors(stream: xshm.Stream, seg_name: str) -> None:
    stream.reader(group="one").close()
    stream.reader(group="two").close()
    with pytest.raises(xshm.XshmError, match="max_groups"):
        stream.reader(group="three")
    for bad in ["", "a/b", "x" * 41, "tab\there"]:
        with pytest.raises(ValueError, match="group"):
            stream.reader(group=bad)
    with pytest.raises(TypeError, match="group"):
        stream.reader(group=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_groups must be 0 to 1024"):
        xshm.Stream.create(seg_name + "-big", 4, max_groups=1025)
    with xshm.Stream.create(seg_name + "-none", 4, max_groups=0) as none:
        with pytest.raises(xshm.XshmError, match="max_groups"):
            none.reader(group="any")
        assert none.groups() == [] and none.header()["max_groups"] == 0
        none.unlink()
    assert [g["name"] for g in stream.groups()] == ["one", "two"]
