//! A value of any `'static` type behind one concrete type, kept inline when small: the storage
//! of a Deferred chain's callbacks and values, so that a step or a value of up to
//! [`INLINE`] bytes costs no allocation (Twisted keeps both in Python lists and objects;
//! `Box<dyn Any>` would allocate each).
//!
//! This is the one module of the Deferred layer that uses `unsafe`. Its invariants:
//!
//! 1. `vtable` always describes the type `T` that [`Erased::new`] was given: its `type_id`,
//!    how it is stored, and the drop that matches. Nothing else ever writes `vtable`.
//! 2. When `T` fits (`size_of::<T>() <= INLINE` and `align_of::<T>() <= align_of::<Buf>()`),
//!    `buf` holds an initialised `T` at its start; otherwise `buf` holds, at its start, a
//!    `*mut T` from `Box::into_raw`, owned by this `Erased`.
//! 3. The `T` (or the box) is read out, or dropped, exactly once: [`Erased::take`] reads it
//!    only after checking `type_id`, and then forgets `self`; `Drop` drops it otherwise.
//! 4. An inline `T` is moved with the `Erased`, byte for byte. That is sound because every
//!    Rust type may be moved so; nothing here pins or hands out a pointer into `buf` that
//!    outlives a borrow of the `Erased`.
//! 5. `Erased` is neither `Send` nor `Sync`: the `T` inside may not be.
//!
//! The tests at the end, the Deferred suites and the chain's proptest model run under
//! AddressSanitizer in `.ci/run`.

use std::any::TypeId;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit, align_of, size_of};
use std::ptr;

/// How many bytes a value may take to be stored without an allocation.
pub(crate) const INLINE: usize = 40;

#[repr(C, align(8))]
struct Buf([MaybeUninit<u8>; INLINE]);

/// What an [`Erased`] needs to know about the type it holds.
struct VTable {
    /// A function rather than the `TypeId` itself: `TypeId::of` is `const` only from Rust
    /// 1.91, past the workspace's MSRV.
    type_id: fn() -> TypeId,
    #[cfg(test)]
    inline: bool,
    /// Drops the value (or its box) that `buf` holds. Called at most once per value.
    drop: unsafe fn(*mut Buf),
}

trait Described: 'static {
    const VTABLE: VTable;
}

impl<T: 'static> Described for T {
    const VTABLE: VTable = VTable {
        type_id: TypeId::of::<T>,
        #[cfg(test)]
        inline: fits::<T>(),
        drop: drop_value::<T>,
    };
}

const fn fits<T>() -> bool {
    size_of::<T>() <= INLINE && align_of::<T>() <= align_of::<Buf>()
}

/// # Safety
///
/// `buf` holds a live value of type `T` stored as invariant 2 says, which is not used again.
unsafe fn drop_value<T: 'static>(buf: *mut Buf) {
    if fits::<T>() {
        // SAFETY: by this function's contract, `buf` starts with an initialised `T` that
        // nothing uses after this drop.
        unsafe { ptr::drop_in_place(buf.cast::<T>()) }
    } else {
        // SAFETY: by this function's contract, `buf` starts with the `*mut T` of a box this
        // value owns; rebuilding the box once frees it once.
        unsafe { drop(Box::from_raw(ptr::read(buf.cast::<*mut T>()))) }
    }
}

/// A value of a type known only at run time (see the module doc for the invariants).
pub(crate) struct Erased {
    buf: Buf,
    vtable: &'static VTable,
    _not_send: PhantomData<*const ()>,
}

impl Erased {
    /// Stores `value`, inline when it fits.
    #[inline]
    pub(crate) fn new<T: 'static>(value: T) -> Erased {
        let mut buf = Buf([MaybeUninit::uninit(); INLINE]);
        let at = ptr::addr_of_mut!(buf);
        if fits::<T>() {
            // SAFETY: `T` fits in `buf` in size and alignment (checked just above), and `buf`
            // is fresh, so nothing is overwritten.
            unsafe { ptr::write(at.cast::<T>(), value) }
        } else {
            let boxed = Box::into_raw(Box::new(value));
            // SAFETY: a pointer fits in `buf` (INLINE >= 8, `Buf` aligned to 8).
            unsafe { ptr::write(at.cast::<*mut T>(), boxed) }
        }
        Erased {
            buf,
            vtable: &<T as Described>::VTABLE,
            _not_send: PhantomData,
        }
    }

    /// Whether the value is a `T`.
    #[inline]
    pub(crate) fn is<T: 'static>(&self) -> bool {
        (self.vtable.type_id)() == TypeId::of::<T>()
    }

    /// Whether the value is stored without an allocation.
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        self.vtable.inline
    }

    /// Takes the value out as a `T`, or gives `self` back when it holds another type.
    #[inline]
    pub(crate) fn take<T: 'static>(self) -> Result<T, Erased> {
        if !self.is::<T>() {
            return Err(self);
        }
        let mut this = ManuallyDrop::new(self);
        let at = ptr::addr_of_mut!(this.buf);
        if fits::<T>() {
            // SAFETY: the type check above and invariant 1 make the value a `T`, stored
            // inline (invariant 2, as `T` fits); `this` is never dropped, so the value is
            // read out exactly once (invariant 3).
            Ok(unsafe { ptr::read(at.cast::<T>()) })
        } else {
            // SAFETY: as above, with the value boxed: `buf` holds the box's pointer, rebuilt
            // here once, and `this` is never dropped.
            Ok(*unsafe { Box::from_raw(ptr::read(at.cast::<*mut T>())) })
        }
    }
}

impl Drop for Erased {
    fn drop(&mut self) {
        // SAFETY: `vtable.drop` matches the stored type (invariant 1), and the value is still
        // in place: `take` forgets `self` after reading it out (invariant 3).
        unsafe { (self.vtable.drop)(ptr::addr_of_mut!(self.buf)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    struct Counted(Rc<Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn small_values_are_inline_and_large_ones_boxed() {
        assert!(Erased::new(7u64).is_inline());
        assert!(Erased::new(()).is_inline());
        assert!(Erased::new(String::from("poem")).is_inline());
        assert!(Erased::new([0u8; INLINE]).is_inline());
        assert!(!Erased::new([0u8; INLINE + 1]).is_inline());
    }

    #[test]
    fn take_gives_the_value_back_inline_or_boxed() {
        assert_eq!(Erased::new(41u32).take::<u32>().ok(), Some(41));
        assert_eq!(
            Erased::new(String::from("roses")).take::<String>().ok(),
            Some("roses".to_string())
        );
        let big = [9u8; 100];
        assert_eq!(Erased::new(big).take::<[u8; 100]>().ok(), Some(big));
        assert_eq!(Erased::new(()).take::<()>().ok(), Some(()));
    }

    #[test]
    fn a_wrong_type_gives_the_erased_value_back_intact() {
        let e = Erased::new(String::from("violets"));
        let Err(e) = e.take::<u32>() else {
            panic!("a String is not a u32");
        };
        assert!(e.is::<String>());
        assert_eq!(e.take::<String>().ok().as_deref(), Some("violets"));
    }

    #[test]
    fn every_value_is_dropped_exactly_once() {
        let drops = Rc::new(Cell::new(0));
        // Inline, dropped with the Erased.
        drop(Erased::new(Counted(drops.clone())));
        assert_eq!(drops.get(), 1);
        // Boxed, dropped with the Erased.
        drop(Erased::new((Counted(drops.clone()), [0u8; 64])));
        assert_eq!(drops.get(), 2);
        // Taken out: dropped by whoever took it, not by the Erased.
        let taken = Erased::new(Counted(drops.clone()))
            .take::<Counted>()
            .ok()
            .expect("a Counted");
        assert_eq!(drops.get(), 2);
        drop(taken);
        assert_eq!(drops.get(), 3);
        let taken = Erased::new((Counted(drops.clone()), [0u8; 64]))
            .take::<(Counted, [u8; 64])>()
            .ok()
            .expect("a boxed Counted");
        assert_eq!(drops.get(), 3);
        drop(taken);
        assert_eq!(drops.get(), 4);
        // A failed take hands the value back; it is dropped once, later.
        let back = Erased::new(Counted(drops.clone())).take::<u8>().err();
        assert_eq!(drops.get(), 4);
        drop(back);
        assert_eq!(drops.get(), 5);
    }

    #[test]
    fn a_moved_erased_value_keeps_its_contents() {
        let values: Vec<Erased> = (0..100u64)
            .map(|i| Erased::new((i, format!("line {i}"))))
            .collect();
        let mut moved = Vec::new();
        moved.extend(values);
        for (i, e) in moved.into_iter().enumerate() {
            let (n, s) = e.take::<(u64, String)>().ok().expect("a pair");
            assert_eq!(n, i as u64);
            assert_eq!(s, format!("line {i}"));
        }
    }

    #[test]
    fn closures_are_stored_and_called() {
        let seen = Rc::new(Cell::new(0));
        let s = seen.clone();
        let f = move |x: u32| s.set(x);
        let e = Erased::new(f);
        assert!(e.is_inline());
        let f = e.take::<_>().ok().map(|g: fn(u32)| g);
        // A closure's type is unnameable: a fn pointer is another type.
        assert!(f.is_none());
        fn call<F: FnOnce(u32) + 'static>(f: F, e: Erased) {
            drop(f);
            let f = e.take::<F>().ok().expect("the same closure type");
            f(5);
        }
        let s = seen.clone();
        let g = move |x: u32| s.set(x + 1);
        let e = Erased::new(g.clone());
        call(g, e);
        assert_eq!(seen.get(), 6);
    }
}
