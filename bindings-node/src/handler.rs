//! The application's JavaScript functions as a core [`Handler`].
//!
//! Each method is a thread-safe function called from tokio. On the Node thread the request's fields are
//! passed to the JavaScript side as plain arguments, after a call id; `lib/server.js` builds the request
//! object, runs the application's function, checks its result and answers through `settleConnect`,
//! `settleCommand` or `settleDisconnect` with that id: at once for a plain value, when the Promise settles
//! for an async function. The tokio task waits on a oneshot registered under the id in a table that lives on
//! the Node thread, so neither side takes a lock.
//!
//! Why the answer comes back by id instead of Rust awaiting the returned Promise: attaching `then`/`catch`
//! from Rust creates two native functions and a weak finalizer per call, and building the request with napi
//! property sets is several times dearer than an object literal in JavaScript; together they were most of
//! the Node thread's time per call (docs/benchmarks.md, "Node: handler call profile").
//!
//! A call that never answers (a Promise that never settles, even one garbage-collected unsettled) keeps its
//! table entry until the core's time limit drops the waiting side; entries whose waiter is gone are swept as
//! the table grows, and a late answer to such a call finds no entry and is ignored. The functions are weak
//! references, so they never keep Node alive by themselves. A call that cannot be made or whose answer
//! cannot be read is a `HandlerError`; the core's `Guarded` wrapper turns it into an ERROR answer and bounds
//! the wait.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use ferrocable::handler::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    DisconnectResponse, Env, EnvResponse, Handler, HandlerError,
};
use napi::bindgen_prelude::{FromNapiValue, Function, JsValuesTupleIntoVec, Unknown};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Status, sys};
use napi_derive::napi;
use tokio::sync::oneshot;

/// What the JavaScript side answered: the response, or why it could not give one.
type Answer<T> = Result<T, String>;

/// One call on its way to the Node thread.
pub struct Job<R: Call> {
    id: i64,
    sid: Arc<str>,
    fields: Vec<Field>,
    answer: oneshot::Sender<Answer<R::Response>>,
}

/// The JavaScript function of one call kind, held weakly (it does not keep the event loop alive).
pub type JsFunction<R> = ThreadsafeFunction<Job<R>, Unknown<'static>, Arguments, Status, false, true>;

/// One request field, prepared on the tokio thread so the Node thread only creates JavaScript values.
pub enum Field {
    Text(String),
    /// A string map as JSON (`JSON.parse` builds the object far more cheaply than napi property sets, and
    /// keeps a key such as `__proto__` an own property); `None` when empty.
    Map(Option<String>),
    List(Vec<String>),
}

/// A request the JavaScript side receives as arguments `(id, sid, ...fields)`.
pub trait Call: Send + 'static + Sized {
    type Response: Send + 'static;
    /// Registers where the answer goes.
    fn waiter(answer: oneshot::Sender<Answer<Self::Response>>) -> Waiter;
    /// The request's fields, in the order lib/server.js takes them after `id` and `sid`.
    fn fields(self) -> Vec<Field>;
}

/// The tokio task waiting for a call's answer.
pub enum Waiter {
    Connect(oneshot::Sender<Answer<ConnectionResponse>>),
    Command(oneshot::Sender<Answer<CommandResponse>>),
    Disconnect(oneshot::Sender<Answer<DisconnectResponse>>),
}

impl Waiter {
    /// The waiting side gave up (its time limit passed, or the session ended).
    fn is_gone(&self) -> bool {
        match self {
            Self::Connect(tx) => tx.is_closed(),
            Self::Command(tx) => tx.is_closed(),
            Self::Disconnect(tx) => tx.is_closed(),
        }
    }

    fn fail(self, reason: String) {
        // The waiting side may have given up; nothing to do then.
        let _ = match self {
            Self::Connect(tx) => tx.send(Err(reason)).map(drop).map_err(drop),
            Self::Command(tx) => tx.send(Err(reason)).map(drop).map_err(drop),
            Self::Disconnect(tx) => tx.send(Err(reason)).map(drop).map_err(drop),
        };
    }
}

/// Calls in flight on this Node thread, by id.
struct Pending {
    waiters: HashMap<i64, Waiter>,
    /// Size at which the next sweep of abandoned entries runs.
    sweep_at: usize,
}

/// Below this many entries the table is never swept: a sweep would cost more than the memory it frees.
const SWEEP_MIN: usize = 1024;

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending { waiters: HashMap::new(), sweep_at: SWEEP_MIN });
}

/// Ids are unique in the process (several servers, several Node threads) and exact as JavaScript numbers.
static NEXT_ID: AtomicI64 = AtomicI64::new(1);

fn register(id: i64, waiter: Waiter) {
    PENDING.with_borrow_mut(|pending| {
        if pending.waiters.len() >= pending.sweep_at {
            pending.waiters.retain(|_, waiter| !waiter.is_gone());
            // Doubling keeps sweeps amortized O(1) per call however many calls are really in flight.
            pending.sweep_at = (pending.waiters.len() * 2).max(SWEEP_MIN);
        }
        pending.waiters.insert(id, waiter);
    });
}

fn take(id: i64) -> Option<Waiter> {
    PENDING.with_borrow_mut(|pending| pending.waiters.remove(&id))
}

/// Arguments already converted on the Node thread.
pub struct Arguments(Vec<sys::napi_value>);

impl JsValuesTupleIntoVec for Arguments {
    fn into_vec(self, _env: sys::napi_env) -> napi::Result<Vec<sys::napi_value>> {
        Ok(self.0)
    }
}

/// Makes the thread-safe function of one call kind: on the Node thread, the job's waiter is registered under
/// its id before the function runs, so an answer given synchronously finds it.
pub fn threadsafe<R: Call>(function: Function<'_, Unknown<'static>, Unknown<'static>>) -> napi::Result<JsFunction<R>> {
    function.build_threadsafe_function::<Job<R>>().weak::<true>().callee_handled::<false>().build_callback(
        |ctx: ThreadsafeCallContext<Job<R>>| {
            let Job { id, sid, fields, answer } = ctx.value;
            register(id, R::waiter(answer));
            let env = ctx.env.raw();
            let mut args = Vec::with_capacity(fields.len() + 2);
            // SAFETY: this closure runs on the Node thread of `env`, inside the call's handle scope.
            unsafe {
                args.push(number(env, id)?);
                args.push(string(env, &sid)?);
                for field in &fields {
                    args.push(match field {
                        Field::Text(text) => string(env, text)?,
                        Field::Map(Some(json)) => string(env, json)?,
                        Field::Map(None) => undefined(env)?,
                        Field::List(list) => string_list(env, list)?,
                    });
                }
            }
            Ok(Arguments(args))
        },
    )
}

fn check(status: sys::napi_status) -> napi::Result<()> {
    if status == sys::Status::napi_ok { Ok(()) } else { Err(napi::Error::from_status(Status::from(status))) }
}

unsafe fn number(env: sys::napi_env, value: i64) -> napi::Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    check(unsafe { sys::napi_create_int64(env, value, &mut out) })?;
    Ok(out)
}

unsafe fn string(env: sys::napi_env, value: &str) -> napi::Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    // ASCII text (identifiers, JSON data, ids: nearly everything here) is the same bytes in Latin-1, which V8
    // copies as they are instead of running its UTF-8 decoder over them.
    let status = if value.is_ascii() {
        unsafe { sys::napi_create_string_latin1(env, value.as_ptr().cast(), value.len() as isize, &mut out) }
    } else {
        unsafe { sys::napi_create_string_utf8(env, value.as_ptr().cast(), value.len() as isize, &mut out) }
    };
    check(status)?;
    Ok(out)
}

unsafe fn undefined(env: sys::napi_env) -> napi::Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    check(unsafe { sys::napi_get_undefined(env, &mut out) })?;
    Ok(out)
}

unsafe fn string_list(env: sys::napi_env, list: &[String]) -> napi::Result<sys::napi_value> {
    let mut array = ptr::null_mut();
    check(unsafe { sys::napi_create_array_with_length(env, list.len(), &mut array) })?;
    for (index, item) in list.iter().enumerate() {
        unsafe { check(sys::napi_set_element(env, array, index as u32, string(env, item)?))? };
    }
    Ok(array)
}

fn map(map: &HashMap<String, String>) -> Field {
    // A map of strings always serializes; should it not, the call fails on the JavaScript side as malformed
    // JSON instead of the process aborting.
    Field::Map((!map.is_empty()).then(|| serde_json::to_string(map).unwrap_or_default()))
}

/// `url, headers, cstate, istate`: the request's env, flattened.
fn push_env(request_env: Option<Env>, fields: &mut Vec<Field>) {
    let Env { url, headers, cstate, istate } = request_env.unwrap_or_default();
    fields.extend([Field::Text(url), map(&headers), map(&cstate), map(&istate)]);
}

impl Call for ConnectionRequest {
    type Response = ConnectionResponse;

    fn waiter(answer: oneshot::Sender<Answer<Self::Response>>) -> Waiter {
        Waiter::Connect(answer)
    }

    fn fields(self) -> Vec<Field> {
        let mut fields = Vec::with_capacity(4);
        push_env(self.env, &mut fields);
        fields
    }
}

impl Call for CommandMessage {
    type Response = CommandResponse;

    fn waiter(answer: oneshot::Sender<Answer<Self::Response>>) -> Waiter {
        Waiter::Command(answer)
    }

    fn fields(self) -> Vec<Field> {
        let mut fields = Vec::with_capacity(8);
        fields.push(Field::Text(self.command));
        fields.push(Field::Text(self.identifier));
        fields.push(Field::Text(self.connection_identifiers));
        fields.push(Field::Text(self.data));
        push_env(self.env, &mut fields);
        fields
    }
}

impl Call for DisconnectRequest {
    type Response = DisconnectResponse;

    fn waiter(answer: oneshot::Sender<Answer<Self::Response>>) -> Waiter {
        Waiter::Disconnect(answer)
    }

    fn fields(self) -> Vec<Field> {
        let mut fields = Vec::with_capacity(6);
        fields.push(Field::Text(self.identifiers));
        fields.push(Field::List(self.subscriptions));
        push_env(self.env, &mut fields);
        fields
    }
}

/// The three handler functions of one server.
pub struct JsHandler {
    pub connect: JsFunction<ConnectionRequest>,
    pub command: JsFunction<CommandMessage>,
    pub disconnect: JsFunction<DisconnectRequest>,
}

/// Calls `function` on the Node thread and waits for its answer.
async fn call<R: Call>(function: &JsFunction<R>, ctx: &CallContext, request: R) -> Result<R::Response, HandlerError> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (answer, answered) = oneshot::channel();
    let job = Job::<R> { id, sid: ctx.sid.clone(), fields: request.fields(), answer };
    // The callback runs on the Node thread right after the function returned. Our side of lib/server.js never
    // throws; should it anyway (a stack overflow), the call fails now instead of waiting for the time limit.
    let status = function.call_with_return_value(job, ThreadsafeFunctionCallMode::NonBlocking, move |returned, _| {
        if let Err(error) = returned
            && let Some(waiter) = take(id)
        {
            waiter.fail(format!("the JavaScript handler threw: {}", error.reason));
        }
        Ok(())
    });
    if status != Status::Ok {
        return Err(HandlerError::Unavailable(format!("the JavaScript handler cannot be called ({status})")));
    }
    answered
        .await
        .map_err(|_| HandlerError::Unavailable("the JavaScript handler was released".into()))?
        .map_err(HandlerError::Failed)
}

#[async_trait]
impl Handler for JsHandler {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        call(&self.connect, ctx, request).await
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        call(&self.command, ctx, request).await
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        call(&self.disconnect, ctx, request).await
    }
}

// --- answers from lib/server.js, already checked there -----------------------------------------------

fn type_of(env: sys::napi_env, value: sys::napi_value) -> napi::Result<sys::napi_valuetype> {
    let mut kind = 0;
    check(unsafe { sys::napi_typeof(env, value, &mut kind) })?;
    Ok(kind)
}

/// Reads a JavaScript string. A short one is read in one call into a buffer that is large enough with room
/// to spare; a longer one is measured first. (napi-rs's `String` always measures first: two passes over
/// every string.)
unsafe fn read_string(env: sys::napi_env, value: sys::napi_value) -> napi::Result<String> {
    const GUESS: usize = 256;
    // V8 writes whole characters only (up to 4 bytes each): fewer than GUESS - 4 bytes written means the
    // next character would have fitted, so there was none.
    const SURELY_COMPLETE: usize = GUESS - 4;
    let mut bytes = Vec::<u8>::with_capacity(GUESS);
    let mut written = 0;
    check(unsafe { sys::napi_get_value_string_utf8(env, value, bytes.as_mut_ptr().cast(), GUESS, &mut written) })?;
    if written >= SURELY_COMPLETE {
        let mut length = 0;
        check(unsafe { sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &mut length) })?;
        bytes = Vec::with_capacity(length + 1);
        check(unsafe {
            sys::napi_get_value_string_utf8(env, value, bytes.as_mut_ptr().cast(), length + 1, &mut written)
        })?;
    }
    // SAFETY: V8 wrote `written` bytes of UTF-8 (invalid sequences replaced) into the buffer.
    unsafe { bytes.set_len(written) };
    Ok(unsafe { String::from_utf8_unchecked(bytes) })
}

/// An optional string of an answer: `undefined` or `null` is none.
pub struct Text(Option<String>);

impl FromNapiValue for Text {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        match type_of(env, value)? {
            sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(Self(None)),
            _ => Ok(Self(Some(unsafe { read_string(env, value)? }))),
        }
    }
}

/// A list of strings of an answer: `undefined` or `null` (none), one string (a lone item, which lib/server.js
/// passes as it is: reading an array element through napi costs more than reading the string), or an array.
pub struct Texts(Vec<String>);

impl FromNapiValue for Texts {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        match type_of(env, value)? {
            sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(Self(Vec::new())),
            sys::ValueType::napi_string => Ok(Self(vec![unsafe { read_string(env, value)? }])),
            _ => {
                let mut length = 0;
                check(unsafe { sys::napi_get_array_length(env, value, &mut length) })?;
                let mut items = Vec::with_capacity(length as usize);
                for index in 0..length {
                    let mut item = ptr::null_mut();
                    check(unsafe { sys::napi_get_element(env, value, index, &mut item) })?;
                    items.push(unsafe { read_string(env, item)? });
                }
                Ok(Self(items))
            }
        }
    }
}

/// Statuses arrive as numbers (0 ERROR, 1 SUCCESS, 2 FAILURE).
fn status(value: u32) -> i32 {
    use ferrocable::handler::Status;
    match value {
        1 => Status::Success as i32,
        2 => Status::Failure as i32,
        _ => Status::Error as i32,
    }
}

/// State changes (an empty value deletes the key); no env when neither map was given.
fn env_response(
    cstate: Option<HashMap<String, String>>,
    istate: Option<HashMap<String, String>>,
) -> Option<EnvResponse> {
    if cstate.is_none() && istate.is_none() {
        return None;
    }
    Some(EnvResponse { cstate: cstate.unwrap_or_default(), istate: istate.unwrap_or_default() })
}

/// `flags` of a Command answer: the connection is to be closed.
const DISCONNECT: u32 = 1;
/// `flags` of a Command answer: every stream of the subscription stops.
const STOP_STREAMS: u32 = 2;

/// Delivers a Connect answer; an unknown id (the call timed out, or was answered already) is ignored.
#[napi]
pub fn settle_connect(
    id: i64,
    status_value: u32,
    identifiers: Text,
    transmissions: Texts,
    error_msg: Text,
    cstate: Option<HashMap<String, String>>,
    istate: Option<HashMap<String, String>>,
) {
    if let Some(Waiter::Connect(tx)) = take(id) {
        let _ = tx.send(Ok(ConnectionResponse {
            status: status(status_value),
            identifiers: identifiers.0.unwrap_or_default(),
            transmissions: transmissions.0,
            error_msg: error_msg.0.unwrap_or_default(),
            env: env_response(cstate, istate),
        }));
    }
}

/// A Command answer's presence change: `kind` join or leave, the member's id and its info as JSON text.
#[napi(object)]
pub struct JsPresenceChange {
    pub kind: String,
    pub id: Option<String>,
    pub info: Option<String>,
}

/// Delivers a Command answer (`flags`: `DISCONNECT | STOP_STREAMS`); an unknown id is ignored.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn settle_command(
    id: i64,
    status_value: u32,
    flags: u32,
    streams: Texts,
    stopped_streams: Texts,
    transmissions: Texts,
    error_msg: Text,
    cstate: Option<HashMap<String, String>>,
    istate: Option<HashMap<String, String>>,
    presence: Option<JsPresenceChange>,
) {
    if let Some(Waiter::Command(tx)) = take(id) {
        let _ = tx.send(Ok(CommandResponse {
            status: status(status_value),
            disconnect: flags & DISCONNECT != 0,
            stop_streams: flags & STOP_STREAMS != 0,
            streams: streams.0,
            stopped_streams: stopped_streams.0,
            transmissions: transmissions.0,
            error_msg: error_msg.0.unwrap_or_default(),
            env: env_response(cstate, istate),
            presence: presence.map(|p| ferrocable::handler::PresenceResponse {
                r#type: p.kind,
                id: p.id.unwrap_or_default(),
                info: p.info.unwrap_or_default(),
                ttl: 0,
            }),
            periodic_timers: Vec::new(),
            callback_streams: Vec::new(),
        }));
    }
}

/// Delivers a Disconnect answer; an unknown id is ignored.
#[napi]
pub fn settle_disconnect(id: i64, status_value: u32, error_msg: Text) {
    if let Some(Waiter::Disconnect(tx)) = take(id) {
        let _ = tx
            .send(Ok(DisconnectResponse { status: status(status_value), error_msg: error_msg.0.unwrap_or_default() }));
    }
}
