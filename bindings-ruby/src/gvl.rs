//! Running Rust code without Ruby's Global VM Lock, so Puma and every other Ruby thread keep running while
//! a Ruby thread waits in Rust (for a handler job, a saturated broadcast queue, or a graceful shutdown).
//!
//! Code run here must never touch a Ruby object: no allocation, no exception, no method call.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::null_mut;

/// Called by Ruby on another thread to wake a blocked `without_gvl` body (Thread#kill, Thread#raise, VM
/// shutdown). It must make the body return promptly and must not touch Ruby either.
pub(crate) struct Unblock {
    pub func: unsafe extern "C" fn(*mut c_void),
    pub data: *mut c_void,
}

struct Payload<F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `Payload` that `without_gvl` keeps alive on its stack for the whole call.
    let payload = unsafe { &mut *(data as *mut Payload<F, R>) };
    if let Some(func) = payload.func.take() {
        // A panic must not unwind into Ruby's C frames; it is reported once the GVL is back.
        payload.result = Some(catch_unwind(AssertUnwindSafe(func)));
    }
    null_mut()
}

/// What became of a `without_gvl` body.
pub(crate) enum Outcome<F, R> {
    /// It ran (and may have panicked).
    Ran(std::thread::Result<R>),
    /// Ruby had an interrupt pending and did not run it; here it is back, untouched.
    Interrupted(F),
}

/// Runs `func` with the GVL released.
///
/// When Ruby has an interrupt pending (Thread#kill, Thread#raise, exit) `func` is not run and comes back as
/// [`Outcome::Interrupted`]: the caller either runs it with the GVL (when it cannot wait on Ruby) or returns
/// to Ruby promptly, where the interrupt is handled. Interrupts are never handled inside this call (it uses
/// `rb_thread_call_without_gvl2`), so no Ruby exception can jump over Rust frames.
pub(crate) fn without_gvl<F, R>(func: F, unblock: Option<Unblock>) -> Outcome<F, R>
where
    F: FnOnce() -> R,
{
    let mut payload = Payload { func: Some(func), result: None };
    let (ubf, ubf_data) = match unblock {
        Some(u) => (Some(u.func), u.data),
        None => (None, null_mut()),
    };
    // SAFETY: the trampoline only dereferences `payload`, which outlives the call; `func` is documented not to
    // touch Ruby, and the unblock function's data is kept alive by the caller for the duration of the call.
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(trampoline::<F, R>),
            &mut payload as *mut Payload<F, R> as *mut c_void,
            ubf,
            ubf_data,
        );
    }
    match (payload.result, payload.func) {
        (Some(result), _) => Outcome::Ran(result),
        (None, Some(func)) => Outcome::Interrupted(func),
        (None, None) => Outcome::Ran(Err(Box::new("the function ran but left no result"))),
    }
}

/// Turns a panic payload into a message for a Ruby exception.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
