//! The GVL dispatcher: carries handler calls from tokio threads to the Ruby threads of the gem's pool and
//! their answers back.
//!
//! A call becomes a [`Job`] in a [`JobQueue`] (bounded by a semaphore, so a flood of connections waits
//! instead of growing memory). Ruby threads take jobs with `Dispatcher#next_job`, which waits **without the
//! GVL**; the thread then converts the request, runs the Ruby handler with the GVL, and answers through the
//! job's oneshot channel. tokio threads never touch a Ruby object: they only push jobs and await answers.
//! The core's `Guarded` wrapper bounds each call in time; a call it gives up on is skipped if no Ruby thread
//! has taken it yet.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use ferrocable::handler::{
    CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest, DisconnectResponse,
};
use ferrocable::{CallContext, Handler, HandlerError};
use magnus::{Error, RHash, RModule, Ruby, Value, function, method, prelude::*};
use parking_lot::{Condvar, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::convert;
use crate::gvl::{Outcome, Unblock, without_gvl};

/// Jobs waiting for a Ruby thread, at most. Beyond it, connection tasks wait for room.
const BACKLOG: usize = 4096;

/// One handler call and where its answer goes.
pub(crate) enum Call {
    Connect(ConnectionRequest, oneshot::Sender<ConnectionResponse>),
    Command(CommandMessage, oneshot::Sender<CommandResponse>),
    Disconnect(DisconnectRequest, oneshot::Sender<DisconnectResponse>),
}

impl Call {
    fn caller_gone(&self) -> bool {
        match self {
            Call::Connect(_, tx) => tx.is_closed(),
            Call::Command(_, tx) => tx.is_closed(),
            Call::Disconnect(_, tx) => tx.is_closed(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Call::Connect(..) => "connect",
            Call::Command(..) => "command",
            Call::Disconnect(..) => "disconnect",
        }
    }
}

/// A queued call. Dropping it unanswered makes the caller's call fail at once.
pub(crate) struct Job {
    sid: Arc<str>,
    call: Call,
    _room: OwnedSemaphorePermit,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
    /// The threads waiting for a job, the one that became idle last at the end. A job wakes that one: under
    /// light load the same few threads run every call and the rest stay asleep, so only the busy ones warm up
    /// their malloc arenas, stacks and caches (waking the longest-idle thread would cycle through the whole pool).
    idle: Vec<Arc<Condvar>>,
}

/// The queue between the server's connection tasks and the Ruby pool threads.
#[derive(Default)]
pub(crate) struct JobQueue {
    state: Mutex<QueueState>,
}

impl JobQueue {
    /// Queues a job; `false` (and the job dropped, failing its call) once the queue is closed.
    fn push(&self, job: Job) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.jobs.push_back(job);
        let idle = state.idle.pop();
        drop(state);
        if let Some(thread) = idle {
            thread.notify_one();
        }
        true
    }

    /// Wakes every waiting thread for good; queued jobs are dropped, so their callers get an error.
    pub(crate) fn close(&self) {
        let (dropped, idle) = {
            let mut state = self.state.lock();
            state.closed = true;
            (std::mem::take(&mut state.jobs), std::mem::take(&mut state.idle))
        };
        idle.iter().for_each(|thread| {
            thread.notify_one();
        });
        drop(dropped);
    }

    fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    fn len(&self) -> usize {
        self.state.lock().jobs.len()
    }

    /// Blocks until a job whose caller still waits is available, the queue closes, or `interrupted` is set;
    /// `parked` is the calling thread's own condition variable. Runs without the GVL.
    fn wait_pop(&self, parked: &Arc<Condvar>, interrupted: &AtomicBool) -> Option<Job> {
        let mut state = self.state.lock();
        loop {
            if state.closed || interrupted.load(Ordering::Acquire) {
                return None;
            }
            // A call that already timed out is not worth running.
            if let Some(job) = std::iter::from_fn(|| state.jobs.pop_front()).find(|job| !job.call.caller_gone()) {
                return Some(job);
            }
            state.idle.push(parked.clone());
            parked.wait(&mut state);
            // A job's push took this thread off the list; an interrupt or a spurious wake-up did not.
            state.idle.retain(|thread| !Arc::ptr_eq(thread, parked));
        }
    }

    /// Wakes the thread that waits with `interrupted` on `parked`.
    fn interrupt(&self, parked: &Condvar, interrupted: &AtomicBool) {
        interrupted.store(true, Ordering::Release);
        // Taking the lock orders the store before the waiter's next check, so the wake-up cannot be lost.
        let _state = self.state.lock();
        parked.notify_one();
    }
}

/// The in-process [`Handler`]: every call is a job for the Ruby pool. Ruby exceptions come back as ERROR
/// answers built on the Ruby side; only a call the pool cannot take or finish is an error here.
pub(crate) struct RubyHandler {
    queue: Arc<JobQueue>,
    room: Arc<Semaphore>,
}

impl RubyHandler {
    pub(crate) fn new(queue: Arc<JobQueue>) -> Self {
        Self { queue, room: Arc::new(Semaphore::new(BACKLOG)) }
    }

    async fn dispatch<T>(
        &self,
        ctx: &CallContext,
        make: impl FnOnce(oneshot::Sender<T>) -> Call,
    ) -> Result<T, HandlerError> {
        let stopped = || HandlerError::Unavailable("the Ruby handler pool is stopped".into());
        let room = self.room.clone().acquire_owned().await.map_err(|_| stopped())?;
        let (tx, rx) = oneshot::channel();
        let job = Job { sid: ctx.sid.clone(), call: make(tx), _room: room };
        if !self.queue.push(job) {
            return Err(stopped());
        }
        rx.await.map_err(|_| HandlerError::Failed("the Ruby handler thread ended without answering".into()))
    }
}

#[async_trait]
impl Handler for RubyHandler {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        self.dispatch(ctx, |tx| Call::Connect(request, tx)).await
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        self.dispatch(ctx, |tx| Call::Command(request, tx)).await
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        self.dispatch(ctx, |tx| Call::Disconnect(request, tx)).await
    }
}

/// `Ferrocable::Native::Dispatcher`: the Ruby side of the queue.
#[magnus::wrap(class = "Ferrocable::Native::Dispatcher", free_immediately, size)]
pub(crate) struct RbDispatcher {
    queue: Arc<JobQueue>,
}

struct Waiter<'a> {
    queue: &'a JobQueue,
    parked: Arc<Condvar>,
    interrupted: AtomicBool,
}

unsafe extern "C" fn unblock_waiter(data: *mut c_void) {
    // SAFETY: `data` is the `Waiter` on the stack of `next_job`, alive while Ruby may call this function.
    let waiter = unsafe { &*(data as *const Waiter<'_>) };
    waiter.queue.interrupt(&waiter.parked, &waiter.interrupted);
}

impl RbDispatcher {
    fn new() -> Self {
        Self { queue: Arc::new(JobQueue::default()) }
    }

    pub(crate) fn queue(&self) -> Arc<JobQueue> {
        self.queue.clone()
    }

    /// Waits without the GVL for the next job. `nil` when the dispatcher is closed, or when the thread was
    /// interrupted (Thread#kill, Thread#raise, exit): the caller checks `closed?` and loops.
    fn next_job(&self) -> Option<RbJob> {
        let waiter = Waiter { queue: &self.queue, parked: Arc::default(), interrupted: AtomicBool::new(false) };
        let unblock = Unblock { func: unblock_waiter, data: &waiter as *const Waiter<'_> as *mut c_void };
        match without_gvl(|| self.queue.wait_pop(&waiter.parked, &waiter.interrupted), Some(unblock)) {
            Outcome::Ran(Ok(Some(job))) => Some(RbJob { job: Mutex::new(Some(job)) }),
            _ => None,
        }
    }

    fn close(&self) {
        self.queue.close();
    }

    fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    fn pending(&self) -> usize {
        self.queue.len()
    }
}

/// `Ferrocable::Native::Job`: one call taken by a Ruby thread. Answered once with `respond`; `release`
/// gives up on it (the caller gets an ERROR result at once instead of waiting for the timeout).
#[magnus::wrap(class = "Ferrocable::Native::Job", free_immediately, size)]
pub(crate) struct RbJob {
    job: Mutex<Option<Job>>,
}

impl RbJob {
    fn with_job<T>(&self, ruby: &Ruby, f: impl FnOnce(&Job) -> T) -> Result<T, Error> {
        match self.job.lock().as_ref() {
            Some(job) => Ok(f(job)),
            None => Err(crate::errors::error(ruby, "Error", "this job was already answered")),
        }
    }

    fn kind(ruby: &Ruby, rb_self: &Self) -> Result<magnus::Symbol, Error> {
        let kind = rb_self.with_job(ruby, |job| job.call.kind())?;
        Ok(ruby.to_symbol(kind))
    }

    fn sid(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        rb_self.with_job(ruby, |job| job.sid.to_string())
    }

    /// The request as a Hash mirroring the rpc.proto message (a new Hash on every call).
    fn request(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let guard = rb_self.job.lock();
        let Some(job) = guard.as_ref() else {
            return Err(crate::errors::error(ruby, "Error", "this job was already answered"));
        };
        match &job.call {
            Call::Connect(request, _) => convert::connection_request(ruby, request),
            Call::Command(request, _) => convert::command_message(ruby, request),
            Call::Disconnect(request, _) => convert::disconnect_request(ruby, request),
        }
    }

    /// Answers the call with a Hash (or anything with `to_h`) mirroring the response message. Raises
    /// `Ferrocable::InvalidResponseError` (and keeps the job) when the value does not convert.
    fn respond(ruby: &Ruby, rb_self: &Self, response: Value) -> Result<bool, Error> {
        let mut guard = rb_self.job.lock();
        let Some(job) = guard.as_ref() else {
            return Err(crate::errors::error(ruby, "Error", "this job was already answered"));
        };
        // Convert first: a bad value leaves the job in place so the caller can still answer with an ERROR.
        enum Ready {
            Connect(ConnectionResponse),
            Command(CommandResponse),
            Disconnect(DisconnectResponse),
        }
        let ready = match &job.call {
            Call::Connect(..) => Ready::Connect(convert::connection_response(ruby, response)?),
            Call::Command(..) => Ready::Command(convert::command_response(ruby, response)?),
            Call::Disconnect(..) => Ready::Disconnect(convert::disconnect_response(ruby, response)?),
        };
        let Some(job) = guard.take() else { return Ok(false) };
        // A send fails only when the caller gave up (timeout); the answer is then dropped.
        let delivered = match (job.call, ready) {
            (Call::Connect(_, tx), Ready::Connect(r)) => tx.send(r).is_ok(),
            (Call::Command(_, tx), Ready::Command(r)) => tx.send(r).is_ok(),
            (Call::Disconnect(_, tx), Ready::Disconnect(r)) => tx.send(r).is_ok(),
            _ => false,
        };
        Ok(delivered)
    }

    fn release(&self) -> bool {
        self.job.lock().take().is_some()
    }

    fn is_answered(&self) -> bool {
        self.job.lock().is_none()
    }
}

pub(crate) fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let dispatcher = native.define_class("Dispatcher", ruby.class_object())?;
    dispatcher.define_singleton_method("new", function!(RbDispatcher::new, 0))?;
    dispatcher.define_method("next_job", method!(RbDispatcher::next_job, 0))?;
    dispatcher.define_method("close", method!(RbDispatcher::close, 0))?;
    dispatcher.define_method("closed?", method!(RbDispatcher::is_closed, 0))?;
    dispatcher.define_method("pending", method!(RbDispatcher::pending, 0))?;

    let job = native.define_class("Job", ruby.class_object())?;
    job.undef_default_alloc_func();
    job.define_method("kind", method!(RbJob::kind, 0))?;
    job.define_method("sid", method!(RbJob::sid, 0))?;
    job.define_method("request", method!(RbJob::request, 0))?;
    job.define_method("respond", method!(RbJob::respond, 1))?;
    job.define_method("release", method!(RbJob::release, 0))?;
    job.define_method("answered?", method!(RbJob::is_answered, 0))?;
    Ok(())
}
