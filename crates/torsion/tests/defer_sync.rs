//! DeferredLock, DeferredSemaphore and DeferredQueue (CHECKLIST "Deferred" 24–26; Twisted's
//! test_defer.py `LockTests`/`DeferredSemaphoreTests`/`QueueTests`).

mod common;

use common::{Boom, Log, log};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use torsion::defer::{DeferredLock, DeferredQueue, DeferredSemaphore, fail};
use torsion::error::{Cancelled, InvalidArgument, Panicked, QueueOverflow, QueueUnderflow};
use torsion::testing::collect_unhandled_failures;
use torsion::{Deferred, Failure};

fn note(log: &Log, what: impl Into<String>) {
    log.borrow_mut().push(what.into());
}

fn result_of<T: 'static>(mut d: Deferred<T>) -> Result<T, Failure> {
    d.take_result().expect("the Deferred has no result yet")
}

/// An acquire whose callback writes `name` into `log`.
fn acquire_logged(lock: &DeferredLock, log: &Log, name: &str) -> Deferred<()> {
    let (log, name) = (log.clone(), name.to_string());
    lock.acquire().map(move |()| note(&log, name))
}

// ---- DeferredLock ----

#[test]
fn lock_first_acquire_fires_at_once_others_wait_fifo() {
    let lock = DeferredLock::new();
    let seen = log();
    assert!(!lock.locked());
    let _a = acquire_logged(&lock, &seen, "a");
    assert_eq!(*seen.borrow(), ["a"]);
    assert!(lock.locked());
    let _b = acquire_logged(&lock, &seen, "b");
    let _c = acquire_logged(&lock, &seen, "c");
    assert_eq!(*seen.borrow(), ["a"], "held: the others wait");
    lock.release();
    assert_eq!(*seen.borrow(), ["a", "b"]);
    assert!(lock.locked());
    lock.release();
    assert_eq!(*seen.borrow(), ["a", "b", "c"]);
    lock.release();
    assert!(!lock.locked());
}

#[test]
#[should_panic(expected = "the lock is not locked")]
fn releasing_an_unlocked_lock_panics() {
    DeferredLock::new().release();
}

#[test]
fn lock_run_holds_until_the_functions_deferred_fires() {
    let lock = DeferredLock::new();
    let (inner_r, inner) = Deferred::<u32>::new();
    let mut run = lock.run(move || inner);
    assert!(lock.locked());
    let ran_second = Rc::new(Cell::new(false));
    let r2 = ran_second.clone();
    let mut second = lock.run(move || {
        r2.set(true);
        Ok(7u32)
    });
    assert!(!ran_second.get(), "the second run waits for the lock");
    assert!(run.take_result().is_none());
    inner_r.callback(5);
    assert_eq!(run.take_result().unwrap().unwrap(), 5);
    assert!(ran_second.get());
    assert_eq!(second.take_result().unwrap().unwrap(), 7);
    assert!(!lock.locked());
}

#[test]
fn lock_run_releases_when_the_function_fails_or_panics() {
    let lock = DeferredLock::new();
    let failed = lock.run(|| fail::<u32>(Boom));
    assert!(result_of(failed).unwrap_err().check::<Boom>());
    assert!(!lock.locked());
    let panicked = lock.run(|| -> Result<u32, Failure> { panic!("in run") });
    assert!(result_of(panicked).unwrap_err().check::<Panicked>());
    assert!(!lock.locked());
}

#[test]
fn cancelled_acquire_never_gets_the_lock() {
    let lock = DeferredLock::new();
    let seen = log();
    let _a = acquire_logged(&lock, &seen, "a");
    let b = acquire_logged(&lock, &seen, "b");
    let _c = acquire_logged(&lock, &seen, "c");
    b.cancel();
    assert!(result_of(b).unwrap_err().check::<Cancelled>());
    lock.release();
    assert_eq!(*seen.borrow(), ["a", "c"]);
    lock.release();
    assert!(!lock.locked());
}

#[test]
fn cancelling_a_waiting_run_means_the_function_never_runs() {
    let lock = DeferredLock::new();
    let _held = lock.acquire();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let run = lock.run(move || {
        r.set(true);
        Ok(())
    });
    run.cancel();
    assert!(result_of(run).unwrap_err().check::<Cancelled>());
    lock.release();
    assert!(!ran.get());
    assert!(!lock.locked());
}

#[test]
fn a_callback_on_an_acquired_lock_can_release_and_reacquire() {
    // Alone: the re-acquire gets the lock at once.
    let lock = DeferredLock::new();
    let seen = log();
    let (l, s) = (lock.clone(), seen.clone());
    let reacquired = Rc::new(RefCell::new(None));
    let again = reacquired.clone();
    let _a = lock.acquire().map(move |()| {
        l.release();
        *again.borrow_mut() = Some(acquire_logged(&l, &s, "again"));
    });
    assert_eq!(*seen.borrow(), ["again"]);
    assert!(lock.locked());
    assert!(reacquired.borrow().is_some());
    lock.release();

    // With a waiter: the waiter goes first, the re-acquire queues behind it.
    let lock = DeferredLock::new();
    let seen = log();
    let _first = acquire_logged(&lock, &seen, "first");
    let (l, s) = (lock.clone(), seen.clone());
    let slot = Rc::new(RefCell::new(None));
    let slot2 = slot.clone();
    let _b = lock.acquire().map(move |()| {
        note(&s, "b");
        l.release();
        *slot2.borrow_mut() = Some(acquire_logged(&l, &s, "b again"));
    });
    let _c = acquire_logged(&lock, &seen, "c");
    lock.release(); // first -> b; b releases -> c; b's re-acquire waits
    assert_eq!(*seen.borrow(), ["first", "b", "c"]);
    lock.release(); // c -> b again
    assert_eq!(*seen.borrow(), ["first", "b", "c", "b again"]);
    lock.release();
    assert!(!lock.locked());
}

#[test]
fn many_waiters_releasing_from_their_callbacks_do_not_grow_the_stack() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let lock = DeferredLock::new();
            let count = Rc::new(Cell::new(0u32));
            let _held = lock.acquire();
            let waiters: Vec<_> = (0..20_000)
                .map(|_| {
                    let (l, c) = (lock.clone(), count.clone());
                    lock.acquire().map(move |()| {
                        c.set(c.get() + 1);
                        l.release();
                    })
                })
                .collect();
            lock.release();
            assert_eq!(count.get(), 20_000);
            assert!(!lock.locked());
            drop(waiters);
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---- DeferredSemaphore ----

#[test]
fn semaphore_admits_n_and_queues_the_rest() {
    let sem = DeferredSemaphore::new(2).unwrap();
    assert_eq!((sem.tokens(), sem.limit()), (2, 2));
    let admitted = Rc::new(Cell::new(0));
    let ds: Vec<_> = (0..4)
        .map(|_| {
            let a = admitted.clone();
            sem.acquire().map(move |()| a.set(a.get() + 1))
        })
        .collect();
    assert_eq!(admitted.get(), 2);
    assert_eq!(sem.tokens(), 0);
    sem.release();
    assert_eq!(admitted.get(), 3);
    sem.release();
    assert_eq!(admitted.get(), 4);
    assert_eq!(sem.tokens(), 0);
    for _ in 0..2 {
        sem.release();
    }
    assert_eq!(sem.tokens(), 2);
    drop(ds);
}

#[test]
fn semaphore_of_zero_is_rejected() {
    let err: InvalidArgument = DeferredSemaphore::new(0).unwrap_err();
    assert!(err.to_string().contains("at least one token"), "{err}");
}

#[test]
#[should_panic(expected = "tokens are already free")]
fn releasing_a_semaphore_more_than_acquired_panics() {
    let sem = DeferredSemaphore::new(1).unwrap();
    drop(sem.acquire());
    sem.release();
    sem.release();
}

#[test]
fn semaphore_run_limits_concurrency() {
    let sem = DeferredSemaphore::new(2).unwrap();
    let running = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let mut resolvers = Vec::new();
    let mut runs = Vec::new();
    for i in 0..5u32 {
        let (r, d) = Deferred::<u32>::new();
        resolvers.push(r);
        let (running, peak) = (running.clone(), peak.clone());
        let d = Rc::new(RefCell::new(Some(d)));
        runs.push(sem.run(move || {
            running.set(running.get() + 1);
            peak.set(peak.get().max(running.get()));
            // Done (and so no longer running) before the token goes back.
            let running = running.clone();
            d.borrow_mut().take().unwrap().map(move |v| {
                running.set(running.get() - 1);
                v + i
            })
        }));
    }
    assert_eq!(running.get(), 2);
    for r in &resolvers {
        r.callback(100);
    }
    assert_eq!(peak.get(), 2);
    let values: Vec<u32> = runs.into_iter().map(|d| result_of(d).unwrap()).collect();
    assert_eq!(values, [100, 101, 102, 103, 104]);
    assert_eq!(sem.tokens(), 2);
}

#[test]
fn cancelled_semaphore_acquire_is_taken_out_of_the_queue() {
    let sem = DeferredSemaphore::new(1).unwrap();
    let _held = sem.acquire();
    let waiting = sem.acquire();
    waiting.cancel();
    assert!(result_of(waiting).unwrap_err().check::<Cancelled>());
    sem.release();
    assert_eq!(
        sem.tokens(),
        1,
        "the token was not handed to the cancelled acquire"
    );
}

// ---- DeferredQueue ----

#[test]
fn queue_put_beyond_size_is_overflow() {
    let queue = DeferredQueue::new(Some(2), None);
    queue.put(1).unwrap();
    queue.put(2).unwrap();
    assert_eq!(queue.put(3), Err(QueueOverflow));
    assert_eq!(queue.len(), 2);
    assert_eq!(result_of(queue.get().unwrap()).unwrap(), 1);
    queue.put(4).unwrap();
    assert_eq!(result_of(queue.get().unwrap()).unwrap(), 2);
    assert_eq!(result_of(queue.get().unwrap()).unwrap(), 4);
    assert!(queue.is_empty());
}

#[test]
fn queue_put_with_getters_waiting_is_never_overflow() {
    let queue = DeferredQueue::new(Some(0), None);
    assert_eq!(queue.put(1), Err(QueueOverflow));
    let get = queue.get().unwrap();
    queue.put(2).unwrap();
    assert_eq!(result_of(get).unwrap(), 2);
}

#[test]
fn queue_get_beyond_backlog_is_underflow() {
    let queue = DeferredQueue::<u32>::new(None, Some(2));
    let a = queue.get().unwrap();
    let b = queue.get().unwrap();
    assert_eq!(queue.get().unwrap_err(), QueueUnderflow);
    queue.put(1).unwrap();
    assert_eq!(result_of(a).unwrap(), 1);
    let c = queue.get().unwrap();
    queue.put(2).unwrap();
    queue.put(3).unwrap();
    assert_eq!(result_of(b).unwrap(), 2);
    assert_eq!(result_of(c).unwrap(), 3);
}

#[test]
fn queue_put_hands_the_item_to_the_first_waiting_getter_fifo() {
    let queue = DeferredQueue::new(None, None);
    let gets: Vec<_> = (0..3).map(|_| queue.get().unwrap()).collect();
    for item in ["x", "y", "z"] {
        queue.put(item).unwrap();
    }
    assert!(queue.is_empty(), "handed straight over, not kept");
    let got: Vec<_> = gets.into_iter().map(|d| result_of(d).unwrap()).collect();
    assert_eq!(got, ["x", "y", "z"]);
}

#[test]
fn cancelled_get_never_receives_an_item() {
    let queue = DeferredQueue::new(None, Some(2));
    let first = queue.get().unwrap();
    let second = queue.get().unwrap();
    first.cancel();
    assert!(result_of(first).unwrap_err().check::<Cancelled>());
    // Taken out of the waiting gets: there is room in the backlog again.
    let third = queue.get().unwrap();
    queue.put("a").unwrap();
    queue.put("b").unwrap();
    assert_eq!(result_of(second).unwrap(), "a");
    assert_eq!(result_of(third).unwrap(), "b");
    // With no getter left, the item is kept.
    let lone = queue.get().unwrap();
    lone.cancel();
    drop(lone.add_errback(|f| f.trap::<Cancelled>().map(|_| "")));
    queue.put("c").unwrap();
    assert_eq!(queue.len(), 1);
}

#[test]
fn a_gets_callback_can_put_into_the_same_queue() {
    let queue = DeferredQueue::new(Some(1), None);
    let seen = log();
    let (q, s) = (queue.clone(), seen.clone());
    let first = queue.get().unwrap().map(move |item: u32| {
        note(&s, format!("got {item}"));
        q.put(item + 1).unwrap();
        note(&s, format!("put {}", item + 1));
    });
    let s = seen.clone();
    let second = queue
        .get()
        .unwrap()
        .map(move |item: u32| note(&s, format!("second got {item}")));
    queue.put(1).unwrap();
    assert_eq!(*seen.borrow(), ["got 1", "second got 2", "put 2"]);
    assert!(queue.is_empty());
    result_of(first).unwrap();
    result_of(second).unwrap();

    // A get's callback that gets again is served from the kept items.
    let queue = DeferredQueue::new(None, None);
    queue.put(10).unwrap();
    queue.put(20).unwrap();
    let q = queue.clone();
    let both = queue
        .get()
        .unwrap()
        .add_callback(move |a: u32| q.get().unwrap().map(move |b| (a, b)));
    assert_eq!(result_of(both).unwrap(), (10, 20));
}

#[test]
fn nothing_is_left_unhandled_by_the_primitives() {
    let ((), unhandled) = collect_unhandled_failures(|| {
        let lock = DeferredLock::new();
        let _held = lock.acquire();
        let waiting = lock.acquire();
        waiting.cancel();
        drop(waiting.add_errback(|f| f.trap::<Cancelled>().map(|_| ())));
        lock.release();
        let queue = DeferredQueue::<u32>::new(None, None);
        let get = queue.get().unwrap();
        drop(queue);
        drop(get);
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}
