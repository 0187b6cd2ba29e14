"""The checks the test scripts beside this file make: each prints ``ok: ...`` or
``FAIL: ...``, and :func:`summary` is the last line the Rust side of the test reads
(``N passed, M failed``); :func:`pcm_hz` measures the tone of what a side heard."""

import sys
from array import array

passed = 0
failed = 0


def check(ok, what):
    """Counts and prints one check; returns ``ok``."""
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {what}", flush=True)
    else:
        failed += 1
        print(f"FAIL: {what}", flush=True)
    return ok


def summary():
    """Prints ``N passed, M failed``; returns the exit status (1 if anything failed or nothing
    was checked)."""
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed or not passed else 0


def pcm_hz(pcm):
    """(dominant frequency, seconds of sound) of raw s16le 48 kHz mono bytes: zero crossings
    (with hysteresis) over its sounding 10 ms windows. (None, s) with under half a second."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder != "little":
        samples.byteswap()
    threshold = 800
    window = 480  # 10 ms
    sounding = 0
    switches = 0
    state = 0
    for start in range(0, len(samples) - window, window):
        chunk = samples[start:start + window]
        if max(abs(x) for x in chunk) < threshold:
            continue
        sounding += window
        for x in chunk:
            if x > threshold and state <= 0:
                state, switches = 1, switches + 1
            elif x < -threshold and state >= 0:
                state, switches = -1, switches + 1
    seconds = sounding / 48000
    if sounding < 48000 // 2:
        return None, seconds
    return switches / 2 / seconds, seconds
