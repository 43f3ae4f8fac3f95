//! `twisted-deferred/defer-10.py` of Dave Peticolas' series (Part 13, "Deferred All The
//! Way Down"): a callback may return another Deferred. The outer Deferred's chain then
//! pauses, not in a thread, it simply stops calling its callbacks, until the inner
//! Deferred fires; the inner one's result becomes the next callback's argument.
//!
//! `cargo run -p torsion-examples --bin defer-10`
//!
//! As in the tutorial no reactor runs: the Deferreds are fired by hand.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use torsion::prelude::*;

/// Shows a Deferred's chain pausing while a callback's own Deferred has not fired.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn callback_1(res: i32) -> Result<i32, Failure> {
    println!("callback_1 got {res}");
    Ok(1)
}

fn callback_2(res: i32) -> Result<i32, Failure> {
    println!("callback_2 got {res}");
    Ok(2)
}

fn callback_3(res: i32) -> Result<i32, Failure> {
    println!("callback_3 got {res}");
    Ok(3)
}

fn main() -> ExitCode {
    Args::parse();
    println!();
    println!("This example illustrates how callbacks in a deferred");
    println!("chain can return deferreds themselves.");
    println!();

    let (resolver, d) = Deferred::new();
    let _d = d
        .add_callback(callback_1)
        .add_callback(callback_2)
        .add_callback(callback_3);
    println!("Here we are firing a deferred with three callbacks that just print");
    println!("their argument and return simple values:");
    println!();
    resolver.callback(0);
    println!();

    // Where the tutorial keeps the inner Deferred in a global, its resolver waits here
    // until we fire it by hand.
    let deferred_2: Rc<RefCell<Option<Resolver<i32>>>> = Rc::default();
    let slot = deferred_2.clone();
    let callback_2_async = move |res: i32| {
        println!("callback_2 got {res}");
        let (resolver, inner) = Deferred::new();
        *slot.borrow_mut() = Some(resolver);
        inner
    };
    let (resolver, d) = Deferred::new();
    let _d = d
        .add_callback(callback_1)
        .add_callback(callback_2_async)
        .add_callback(callback_3);
    println!("Here we are firing a deferred as above but the middle callback is");
    println!("returning a deferred:");
    println!();
    resolver.callback(0);
    println!();
    println!("Notice the output from the third callback is missing. That's because");
    println!("the second callback returned a deferred and now the 'outer' deferred");
    println!("is paused. It is not waiting in a thread; it just stopped invoking the");
    println!("callbacks in its chain, and will go on when the 'inner' deferred fires.");
    println!();
    println!("We can see this in action by firing the inner deferred:");
    println!();
    let inner = deferred_2.borrow_mut().take();
    if let Some(inner) = inner {
        inner.callback(2);
    }
    println!();
    println!("Note the argument to the inner deferred's callback became the result");
    println!("passed to the next callback in the outer deferred.");
    ExitCode::SUCCESS
}
