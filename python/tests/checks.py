"""The checks the test scripts beside this file make: each prints ``ok: ...`` or
``FAIL: ...``, and :func:`summary` is the last line the Rust side of the test reads
(``N passed, M failed``)."""

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
