//! The application's JavaScript functions as a core [`Handler`].
//!
//! Each method is a thread-safe function called from tokio: the request is converted to its JavaScript
//! shape, the function runs on the Node thread, and the Promise it returns is awaited here without blocking
//! a tokio thread. The functions are weak references, so they never keep Node alive by themselves. A call
//! that cannot be made or whose answer cannot be read is a `HandlerError`; the core's `Guarded` wrapper turns
//! it into an ERROR answer and bounds the wait.

use async_trait::async_trait;
use ferrocable::handler::{
    CallContext, CommandMessage, CommandResponse, ConnectionRequest, ConnectionResponse, DisconnectRequest,
    DisconnectResponse, Handler, HandlerError,
};
use std::cell::RefCell;
use std::rc::Rc;

use napi::bindgen_prelude::{CallbackContext, FromNapiValue, PromiseRaw, ToNapiValue, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Status, sys};
use tokio::sync::oneshot;

use crate::convert::{
    JsCommandMessage, JsCommandResponse, JsConnectionRequest, JsConnectionResponse, JsDisconnectRequest,
    JsDisconnectResponse,
};

/// An async JavaScript function `(request) => Promise<response>`, called with the request alone and held
/// weakly (it does not keep the event loop alive).
pub type JsFunction<Req, Resp> = ThreadsafeFunction<Req, Answer<Resp>, Req, Status, false, true>;

/// How a Promise returned by the application ended.
enum Settled<T> {
    Fulfilled(T),
    Rejected(napi::Error),
    /// The Promise was garbage-collected before it settled: nothing can settle it any more.
    Abandoned,
}

/// The sending half shared by the `then` and `catch` callbacks; when both are dropped without either having
/// run, the Promise was collected unsettled and the waiting side hears `Abandoned`.
struct Settle<T>(Option<oneshot::Sender<Settled<T>>>);

impl<T> Settle<T> {
    fn send(&mut self, settled: Settled<T>) {
        if let Some(sender) = self.0.take() {
            // The waiting side may have given up (timed out); nothing to do then.
            let _ = sender.send(settled);
        }
    }
}

impl<T> Drop for Settle<T> {
    fn drop(&mut self) {
        self.send(Settled::Abandoned);
    }
}

/// The Promise a handler function returned, awaitable from tokio. Unlike napi's `Promise`, a Promise that is
/// collected without settling (`new Promise(() => {})` with nothing holding it) is not mistaken for a
/// rejection: it is a call that never answers, which the core's time limit ends.
pub struct Answer<T>(oneshot::Receiver<Settled<T>>);

impl<T: FromNapiValue + 'static> FromNapiValue for Answer<T> {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        let (sender, receiver) = oneshot::channel();
        let promise = unsafe { PromiseRaw::<T>::from_napi_value(env, value)? };
        let on_fulfilled = Rc::new(RefCell::new(Settle(Some(sender))));
        let on_rejected = on_fulfilled.clone();
        promise
            .then(move |ctx: CallbackContext<T>| {
                on_fulfilled.borrow_mut().send(Settled::Fulfilled(ctx.value));
                Ok(())
            })?
            .catch(move |ctx: CallbackContext<Unknown>| {
                on_rejected.borrow_mut().send(Settled::Rejected(ctx.value.into()));
                Ok(())
            })?;
        Ok(Self(receiver))
    }
}

impl<T> Answer<T> {
    async fn settled(self) -> Result<T, HandlerError> {
        match self.0.await {
            Ok(Settled::Fulfilled(value)) => Ok(value),
            Ok(Settled::Rejected(error)) => Err(HandlerError::Failed(error.reason.clone())),
            Ok(Settled::Abandoned) | Err(_) => std::future::pending().await,
        }
    }
}

/// The three handler functions of one server.
pub struct JsHandler {
    pub connect: JsFunction<JsConnectionRequest, JsConnectionResponse>,
    pub command: JsFunction<JsCommandMessage, JsCommandResponse>,
    pub disconnect: JsFunction<JsDisconnectRequest, JsDisconnectResponse>,
}

/// Calls `function` on the Node thread and awaits the Promise it returns.
async fn call<Req: ToNapiValue + 'static, Resp: FromNapiValue + Send + 'static>(
    function: &JsFunction<Req, Resp>,
    request: Req,
) -> Result<Resp, HandlerError> {
    let (answer_tx, answer_rx) = oneshot::channel();
    // The callback runs on the Node thread with what the function returned (or threw); errors are turned into
    // text there, as a napi error must not leave that thread.
    let status =
        function.call_with_return_value(request, ThreadsafeFunctionCallMode::NonBlocking, move |returned, _| {
            let _ = answer_tx.send(returned.map_err(|error| error.reason.clone()));
            Ok(())
        });
    if status != Status::Ok {
        return Err(HandlerError::Unavailable(format!("the JavaScript handler cannot be called ({status})")));
    }
    let answer = answer_rx
        .await
        .map_err(|_| HandlerError::Unavailable("the JavaScript handler was released".into()))?
        .map_err(|reason| HandlerError::Failed(format!("the JavaScript handler did not return a Promise: {reason}")))?;
    answer.settled().await
}

#[async_trait]
impl Handler for JsHandler {
    async fn connect(&self, ctx: &CallContext, request: ConnectionRequest) -> Result<ConnectionResponse, HandlerError> {
        call(&self.connect, JsConnectionRequest::new(&ctx.sid, request)).await.map(Into::into)
    }

    async fn command(&self, ctx: &CallContext, request: CommandMessage) -> Result<CommandResponse, HandlerError> {
        call(&self.command, JsCommandMessage::new(&ctx.sid, request)).await.map(Into::into)
    }

    async fn disconnect(
        &self,
        ctx: &CallContext,
        request: DisconnectRequest,
    ) -> Result<DisconnectResponse, HandlerError> {
        call(&self.disconnect, JsDisconnectRequest::new(&ctx.sid, request)).await.map(Into::into)
    }
}
