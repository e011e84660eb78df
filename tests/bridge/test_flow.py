"""A stream export's flow control (python/xshm/bridge/_flow.py), on a clock the test moves: the
export reads no further than the slowest live mirror's next sequence plus its window, waits
for a new mirror's route to settle, sends again what a mirror stopped short of, and forgets a
mirror gone silent."""

from __future__ import annotations

from xshm.bridge._envelope import NO_SEQ, Ack
from xshm.bridge._flow import MIRROR_TIMEOUT, RESEND_AFTER, SETTLE, Credit, max_window


def ack(mirror: bytes, next_seq: int, window: int = 100) -> Ack:
    return Ack(1, 1, next_seq, window, mirror * 16)


def test_no_mirror_no_reading() -> None:
    c = Credit(next_read=0, max_window=100)
    assert c.plan(now=0.0) == (0, 0, [])


def test_a_new_mirror_settles_then_gets_its_window() -> None:
    c = Credit(next_read=10, max_window=100)
    c.on_ack(ack(b"a", NO_SEQ), now=0.0)
    assert c.plan(now=0.0) == (1, 0, [])  # settling: Zenoh's route to it is not there yet
    assert c.plan(now=SETTLE + 0.01) == (1, 100, [])  # from where it joined (10), 100 more
    c.sent(10, 59, b"batch 10-59")
    assert c.plan(now=SETTLE + 0.02)[1] == 50
    c.on_ack(ack(b"a", 60), now=SETTLE + 0.03)
    assert c.plan(now=SETTLE + 0.04)[1] == 100
    assert c.inflight() == 0  # acknowledged: nothing kept to resend


def test_the_slowest_mirror_and_the_smallest_window_govern() -> None:
    c = Credit(next_read=0, max_window=1000)
    c.on_ack(ack(b"a", NO_SEQ, window=500), now=0.0)
    c.on_ack(ack(b"b", NO_SEQ, window=200), now=0.0)
    t = SETTLE + 0.01
    assert c.plan(now=t) == (2, 200, [])
    c.sent(0, 149, b"0-149")
    c.on_ack(ack(b"a", 150, window=500), now=t)
    c.on_ack(ack(b"b", 20, window=200), now=t)
    assert c.plan(now=t)[1] == 20 + 200 - 150
    assert max_window(1 << 20) == 64 and max_window(64) == 4096 and max_window(1 << 40) == 1


def test_what_a_mirror_stopped_short_of_is_sent_again_once_a_second() -> None:
    c = Credit(next_read=0, max_window=1000)
    c.on_ack(ack(b"a", NO_SEQ), now=0.0)
    t = SETTLE + 0.01
    c.plan(now=t)
    c.sent(0, 9, b"0-9")
    c.sent(10, 19, b"10-19")
    c.on_ack(ack(b"a", 10), now=t)  # it has 0-9: 10-19 lost with a link that dropped
    assert c.plan(now=t + 0.1)[2] == []
    assert c.plan(now=t + RESEND_AFTER + 0.01)[2] == [b"10-19"]
    assert c.plan(now=t + RESEND_AFTER + 0.02)[2] == []  # not again at once
    c.on_ack(ack(b"a", 20), now=t + RESEND_AFTER + 0.03)
    assert c.plan(now=t + 3 * RESEND_AFTER)[2] == []
    assert c.inflight() == 0


def test_a_mirror_gone_silent_no_longer_holds_the_export() -> None:
    c = Credit(next_read=0, max_window=100)
    c.on_ack(ack(b"a", NO_SEQ), now=0.0)
    c.on_ack(ack(b"b", NO_SEQ), now=0.0)
    t = SETTLE + 0.01
    c.sent(0, 99, b"0-99")
    c.on_ack(ack(b"a", 100), now=t)  # b says nothing more
    assert c.plan(now=t)[:2] == (2, 0)
    for k in range(1, 5):  # a keeps acknowledging
        c.on_ack(ack(b"a", 100), now=t + k)
    assert c.plan(now=t + MIRROR_TIMEOUT + 0.5)[:2] == (1, 100)


def test_the_base_is_the_oldest_batch_kept() -> None:
    c = Credit(next_read=0, max_window=1000)
    assert c.base(0) == 0
    c.on_ack(ack(b"a", NO_SEQ), now=0.0)
    c.sent(0, 9, b"0-9")
    assert c.base(10) == 0  # 0-9 not acknowledged: still kept, a mirror may have it again
    c.on_ack(ack(b"a", 10), now=SETTLE + 0.01)
    c.plan(now=SETTLE + 0.02)
    assert c.base(10) == 10
