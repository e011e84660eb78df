"""atheris target: segments made of arbitrary bytes, and valid segments with fields mutated, must
be refused with xshm.LayoutError or opened and read; never a crash, a hang or another error.
Same input format as fuzz_open.cpp (byte 0 even: raw bytes; odd: template + edits).

The compiled core is not instrumented here, so this target's coverage feedback is the harness's
own branches; it checks the binding, its error mapping and the numpy views on the inputs it
generates. Coverage-guided fuzzing of the C++ validation is fuzz_open.cpp's job (libFuzzer).

    python tests/fuzz/fuzz_open.py [atheris/libFuzzer options] [CORPUS...]
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports():
    import xshm

NAME = f"xshm-fuzz-py-{os.getpid()}"
TEMPLATES: list[bytes] = []


def _template(tag: str, **kw: object) -> bytes:
    name = f"xshm-fuzz-template-{os.getpid()}-{tag}"
    with xshm.SharedMemoryManager.create(name, **kw) as m:  # type: ignore[arg-type]
        m.publish(counter=3)
        with open(f"/dev/shm/{name}", "rb") as f:
            data = f.read()
        m.unlink()
    return data


@atheris.instrument_func  # Python-level coverage of the harness: which outcome each input reached
def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    if data[0] & 1 == 0:
        seg = data[1:]
    else:
        buf = bytearray(TEMPLATES[(data[0] >> 1) % len(TEMPLATES)])
        for i in range(1, len(data) - 2, 3):
            buf[(data[i] | data[i + 1] << 8) % len(buf)] = data[i + 2]
        seg = bytes(buf)
    with open(f"/dev/shm/{NAME}", "wb") as f:
        f.write(seg)
    try:
        with xshm.SharedMemoryManager.open(NAME, readonly=True, stall_timeout=0.001) as m:
            snap = m.read()
            assert snap.values.shape == m.shape
    except xshm.LayoutError:
        pass
    except xshm.TornRecordError:
        pass  # documented for segments without backup whose record is marked mid-write
    finally:
        os.unlink(f"/dev/shm/{NAME}")


def main() -> None:
    TEMPLATES.extend(
        [
            _template("a", shape=(4,), message_capacity=16),
            _template("b", shape=(2, 3), dtype="int16", backup=False),
            _template("c", shape=(0,), dtype="bool", message_capacity=0),
        ]
    )
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
