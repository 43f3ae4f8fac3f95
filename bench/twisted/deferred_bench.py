"""Twisted reference figures for crates/torsion/benches/deferred.rs (and the call_later /
cancel case of benches/timers.rs).

Run with a Python that has Twisted installed:

    /work/venv-twisted/bin/python bench/twisted/deferred_bench.py

Prints one line per case: the case name and the best of several timeit repeats, in ns per
operation (a callback, a nesting level, a spawned coroutine, a callLater + cancel).
Versions go to stderr.
"""

import sys
import timeit

import twisted
from twisted.internet import defer, reactor, task

REPEAT = 5


def best_ns_per_op(stmt, number, ops_per_call, setup=None):
    """The fastest of REPEAT runs of `number` calls of `stmt`, per operation, in ns."""
    timer = timeit.Timer(stmt)
    best = float("inf")
    for _ in range(REPEAT):
        if setup is not None:
            setup()
        best = min(best, timer.timeit(number=number))
    return best / (number * ops_per_call) * 1e9


def add_one(x):
    return x + 1


def fire_10_callbacks():
    d = defer.Deferred()
    for _ in range(10):
        d.addCallback(add_one)
    d.callback(1)
    assert d.result == 11
    return d.result


def nested_1000():
    first = defer.Deferred()
    d = first
    inners = [defer.Deferred() for _ in range(1000)]
    for inner in inners:
        d.addCallback(lambda _, inner=inner: inner)
    first.callback(0)
    for i, inner in enumerate(inners):
        inner.callback(i)
    assert d.result == 999
    return d.result


@defer.inlineCallbacks
def inline_callbacks_await_fired():
    value = yield defer.succeed(1)
    return value


async def coroutine_await_fired():
    return await defer.succeed(1)


def spawn_inline_callbacks():
    d = inline_callbacks_await_fired()
    assert d.result == 1
    return d.result


def spawn_ensure_deferred():
    d = defer.ensureDeferred(coroutine_await_fired())
    assert d.result == 1
    return d.result


def noop():
    pass


clock = task.Clock()


def clock_call_later_cancel_100k():
    call_later = clock.callLater
    for _ in range(100_000):
        call_later(10, noop).cancel()


def reactor_call_later_cancel_100k():
    call_later = reactor.callLater
    for _ in range(100_000):
        call_later(10, noop).cancel()


def drop_reactor_calls():
    # The reactor is never run, so cancelled calls pile up in its list of new calls; empty
    # it between repeats (outside the timing) to keep memory flat.
    reactor._newTimedCalls.clear()
    reactor._cancellations = 0


def main():
    print(
        f"# Python {sys.version.split()[0]}, Twisted {twisted.__version__}, "
        f"reactor {type(reactor).__name__}",
        file=sys.stderr,
        flush=True,
    )
    # One Deferred with 10 callbacks, fired: per chain and per callback, one measurement.
    per_chain = best_ns_per_op(fire_10_callbacks, 20_000, 1)
    print(f"fire_10_callbacks/per_chain {per_chain:.0f}")
    print(f"fire_10_callbacks/per_callback {per_chain / 10:.0f}")
    cases = [
        ("nested_1000/per_level", nested_1000, 50, 1000, None),
        ("spawn_await_fired/inlineCallbacks", spawn_inline_callbacks, 50_000, 1, None),
        ("spawn_await_fired/ensureDeferred", spawn_ensure_deferred, 50_000, 1, None),
        ("call_later_cancel/task.Clock", clock_call_later_cancel_100k, 1, 100_000, None),
        (
            "call_later_cancel/reactor",
            reactor_call_later_cancel_100k,
            1,
            100_000,
            drop_reactor_calls,
        ),
    ]
    for name, stmt, number, ops, setup in cases:
        ns = best_ns_per_op(stmt, number, ops, setup)
        print(f"{name} {ns:.0f}")
    drop_reactor_calls()


if __name__ == "__main__":
    main()
