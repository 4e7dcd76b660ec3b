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
use napi::Status;
use napi::bindgen_prelude::{FromNapiValue, Promise, ToNapiValue};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use tokio::sync::oneshot;

use crate::convert::{
    JsCommandMessage, JsCommandResponse, JsConnectionRequest, JsConnectionResponse, JsDisconnectRequest,
    JsDisconnectResponse,
};

/// An async JavaScript function `(request) => Promise<response>`, called with the request alone and held
/// weakly (it does not keep the event loop alive).
pub type JsFunction<Req, Resp> = ThreadsafeFunction<Req, Promise<Resp>, Req, Status, false, true>;

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
    let promise = answer_rx
        .await
        .map_err(|_| HandlerError::Unavailable("the JavaScript handler was released".into()))?
        .map_err(|reason| HandlerError::Failed(format!("the JavaScript handler did not return a Promise: {reason}")))?;
    promise.await.map_err(|error| HandlerError::Failed(error.reason.clone()))
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
