//! How many heap allocations a Deferred chain costs, counted by a global allocator that
//! only counts on the current thread while a measurement is running (so the test harness and
//! other tests' threads do not disturb the figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;

use torsion::defer::succeed;
use torsion::{Deferred, spawn};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static REALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCS);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCS);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(&REALLOCS);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    allocs: usize,
    reallocs: usize,
}

impl Counts {
    fn total(self) -> usize {
        self.allocs + self.reallocs
    }
}

/// Runs `f` once unmeasured (so lazily initialised state is in place), then again counting
/// this thread's allocations.
fn measure<R>(mut f: impl FnMut() -> R) -> (R, Counts) {
    drop(f());
    ALLOCS.with(|c| c.set(0));
    REALLOCS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    let counts = Counts {
        allocs: ALLOCS.with(Cell::get),
        reallocs: REALLOCS.with(Cell::get),
    };
    (result, counts)
}

/// `Deferred::new` + `n` × `add_callback(|x| Ok(x + 1))` + fire + `take_result`.
fn chain_of(n: u64) -> u64 {
    let (resolver, mut d) = Deferred::<u64>::new();
    for _ in 0..n {
        d = d.add_callback(|x| Ok(x + 1));
    }
    resolver.callback(1);
    d.take_result().unwrap().unwrap()
}

#[test]
fn ten_callbacks_cost_the_chain_and_one_spilled_queue() {
    let (value, counts) = measure(|| chain_of(10));
    assert_eq!(value, 11);
    eprintln!("10 add_callback, non-capturing closures: {counts:?}");
    // Measured: 2 allocations and 1 reallocation. The chain (1), holding the first 4 steps
    // and the fired value inline; the queue the other 6 spill into (1), which grows once.
    assert!(counts.allocs <= 2, "{counts:?}");
    assert!(counts.reallocs <= 1, "{counts:?}");
}

#[test]
fn a_chain_of_four_callbacks_is_one_allocation() {
    let (value, counts) = measure(|| chain_of(4));
    assert_eq!(value, 5);
    eprintln!("4 add_callback: {counts:?}");
    assert_eq!(counts.total(), 1, "{counts:?}");
}

#[test]
fn further_callbacks_and_small_captures_cost_no_allocation_of_their_own() {
    let (_, ten) = measure(|| chain_of(10));
    let (value, thousand) = measure(|| chain_of(1010));
    assert_eq!(value, 1011);
    eprintln!("1,010 add_callback: {thousand:?}");
    // 1,000 more steps: the spilled queue grows (reallocations), nothing else.
    assert_eq!(thousand.allocs, ten.allocs, "{ten:?} {thousand:?}");
    assert!(thousand.reallocs <= 10, "{thousand:?}");

    // A step whose closure is larger than the inline room is boxed: one allocation.
    let big = [7u8; 64];
    let (value, boxed) = measure(|| {
        let (resolver, d) = Deferred::<u64>::new();
        let mut d = d.add_callback(move |x| Ok(x + u64::from(big[63])));
        resolver.callback(1);
        d.take_result().unwrap().unwrap()
    });
    assert_eq!(value, 8);
    eprintln!("one add_callback capturing 64 bytes: {boxed:?}");
    assert_eq!(boxed.total(), 2, "{boxed:?}");

    let shared = Rc::new(Cell::new(0u64));
    let (value, capturing) = measure(|| {
        let (resolver, mut d) = Deferred::<u64>::new();
        for _ in 0..10 {
            let shared = shared.clone();
            d = d.add_callback(move |x| {
                shared.set(shared.get() + 1);
                Ok(x + 1)
            });
        }
        resolver.callback(1);
        d.take_result().unwrap().unwrap()
    });
    assert_eq!(value, 11);
    eprintln!("10 add_callback, closures capturing an Rc: {capturing:?}");
    assert_eq!(capturing, ten);
}

#[test]
fn nested_deferreds_and_spawned_futures() {
    const LEVELS: usize = 100;
    let (value, nested) = measure(|| {
        let (first, mut d) = Deferred::<u64>::new();
        let mut resolvers = Vec::with_capacity(LEVELS);
        for _ in 0..LEVELS {
            let (resolver, inner) = Deferred::<u64>::new();
            resolvers.push(resolver);
            d = d.add_callback(move |_| inner);
        }
        first.callback(0);
        for (i, resolver) in resolvers.into_iter().enumerate() {
            resolver.callback(i as u64);
        }
        d.take_result().unwrap().unwrap()
    });
    assert_eq!(value, LEVELS as u64 - 1);
    eprintln!("{LEVELS} nested Deferreds: {nested:?}");
    // Measured: 1 per level (the inner chain, holding its continuation, the fired value and
    // the callback's step inline), plus the outer chain, its spilled queue and the `Vec` of
    // resolvers.
    assert!(nested.allocs <= LEVELS + 3, "{nested:?}");

    let (value, spawned) = measure(|| {
        let mut d = spawn(async { succeed(1u64).await });
        d.take_result().unwrap().unwrap()
    });
    assert_eq!(value, 1);
    eprintln!("spawn(async {{ succeed(1).await }}) + take_result: {spawned:?}");
    // Measured: 5. The chain, the task, its boxed future, its waker, and the fired Deferred
    // awaited.
    assert!(spawned.allocs <= 5, "{spawned:?}");
}
