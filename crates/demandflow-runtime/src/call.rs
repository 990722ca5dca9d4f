//! Typed calls and messages: a [`Request`] type names its reply, a stage
//! implements [`HandleCall`] for the requests it answers and registers them on
//! its builder, and handles `call` it (waiting for the reply, with a timeout) or
//! `cast` to it (without waiting).
//!
//! Reach for it instead of `send_info` when the stage should answer, or when the
//! stage should get the message as its own type rather than an [`Info`] to
//! downcast.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;

use crate::{Context, Info};

/// A request a stage can answer: the type of its reply.
///
/// The request type is also how a stage tells its requests apart, so give each
/// kind of request its own type (a unit struct for a question without
/// arguments). A message that wants no answer is a request whose reply is `()`;
/// send it with a handle's `cast`.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::Request;
///
/// /// How many events has the stage emitted so far?
/// struct Emitted;
///
/// impl Request for Emitted {
///     type Reply = u64;
/// }
/// ```
pub trait Request: Send + 'static {
    /// What the stage answers.
    type Reply: Send + 'static;
}

/// A stage that answers requests of type `R` (GenStage's `handle_call`).
///
/// `O` is the type of events the stage emits: the producer's `Event`, the
/// producer-consumer's `Out`, and [`Infallible`](std::convert::Infallible) for
/// a consumer (whose context is a [`ConsumerContext`](crate::ConsumerContext)).
/// Implement it once per request type, then register the request on the
/// builder with `answers::<R>()`; a request the stage did not register is
/// refused with [`CallError::Unhandled`].
///
/// The runtime guarantees you that a request is handled in its place: on a
/// producer or producer-consumer, after every event emitted before the request
/// arrived has been dispatched to consumers (exactly like an info message), and
/// between two other callbacks, with `&mut self`, like every callback. Events
/// emitted on `ctx` are dispatched as from any other callback, before the next
/// request is handled.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{Context, HandleCall, Producer, Request, producer};
/// use std::time::Duration;
///
/// struct Counter(u64);
///
/// impl Producer for Counter {
///     type Event = u64;
///
///     async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
///         ctx.emit_all(self.0..self.0 + demand);
///         self.0 += demand;
///     }
/// }
///
/// /// Where is the counter?
/// struct Next;
/// impl Request for Next {
///     type Reply = u64;
/// }
///
/// impl HandleCall<Next, u64> for Counter {
///     async fn handle_call(&mut self, _: Next, _: &mut Context<u64>) -> u64 {
///         self.0
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let counter = producer(Counter(7)).answers::<Next>().start().unwrap();
/// assert_eq!(counter.call(Next, Duration::from_secs(5)).await, Ok(7));
/// # }
/// ```
pub trait HandleCall<R: Request, O>: Send + 'static {
    /// Answers `request`. The reply goes to the caller when it still waits (a
    /// `call` that has not timed out); a `cast`'s reply is dropped.
    fn handle_call(
        &mut self,
        request: R,
        ctx: &mut Context<O>,
    ) -> impl Future<Output = R::Reply> + Send;
}

/// Why a `call` returned no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply came within the timeout. The request stays queued and the stage
    /// still handles it in its turn; its reply is dropped. The stage keeps
    /// running.
    #[error("call timed out")]
    Timeout,
    /// The stage had stopped, or stopped before answering.
    #[error("stage is not running")]
    Stopped,
    /// The stage does not answer this request type: it was not registered with
    /// the builder's `answers`.
    #[error("stage does not answer this request type")]
    Unhandled,
}

type Reply = oneshot::Sender<Result<Box<dyn Any + Send>, CallError>>;

/// A request on its way to a stage, with the reply channel of a call.
pub(crate) struct Call {
    request: Box<dyn Any + Send>,
    type_id: TypeId,
    type_name: &'static str,
    reply: Option<Reply>,
}

impl Call {
    /// A call (with `reply`) or a cast (without).
    pub(crate) fn new<R: Request>(request: R, reply: Option<Reply>) -> Self {
        Call {
            request: Box::new(request),
            type_id: TypeId::of::<R>(),
            type_name: std::any::type_name::<R>(),
            reply,
        }
    }

    /// Refuses the request: the stage does not answer its type. A call is
    /// answered [`CallError::Unhandled`]; for a cast, which nobody waits for,
    /// returns the request's type name to report.
    pub(crate) fn refuse(self) -> Option<&'static str> {
        match self.reply {
            Some(reply) => {
                let _ = reply.send(Err(CallError::Unhandled));
                None
            }
            None => Some(self.type_name),
        }
    }
}

/// Turns a type-erased reply back into `R::Reply`.
pub(crate) fn typed_reply<R: Request>(
    reply: Result<Box<dyn Any + Send>, CallError>,
) -> Result<R::Reply, CallError> {
    // The handler registered for `R` boxed an `R::Reply`: the downcast cannot fail.
    reply.and_then(|r| {
        r.downcast::<R::Reply>()
            .map(|r| *r)
            .map_err(|_| CallError::Unhandled)
    })
}

/// A message for a stage, delivered in its place behind buffered events: an
/// info for `handle_info` or a request for `handle_call`.
pub(crate) enum Message {
    Info(Info),
    Call(Call),
}

type Answer<'a> = Pin<Box<dyn Future<Output = Box<dyn Any + Send>> + Send + 'a>>;
type Handler<S, O> = for<'a> fn(&'a mut S, Box<dyn Any + Send>, &'a mut Context<O>) -> Answer<'a>;

fn handler<'a, S, R, O>(
    stage: &'a mut S,
    request: Box<dyn Any + Send>,
    ctx: &'a mut Context<O>,
) -> Answer<'a>
where
    S: HandleCall<R, O>,
    R: Request,
    O: Send + 'static,
{
    Box::pin(async move {
        match request.downcast::<R>() {
            Ok(request) => Box::new(stage.handle_call(*request, ctx).await) as Box<dyn Any + Send>,
            // Routed by type id: never reached.
            Err(_) => Box::new(()),
        }
    })
}

/// The requests a stage registered with its builder, each with its handler.
pub(crate) struct Calls<S, O> {
    handlers: Vec<(TypeId, Handler<S, O>)>,
}

impl<S, O: Send + 'static> Calls<S, O> {
    pub(crate) fn new() -> Self {
        Calls {
            handlers: Vec::new(),
        }
    }

    /// Registers `R` (again: the last registration wins, they are the same).
    pub(crate) fn register<R: Request>(&mut self)
    where
        S: HandleCall<R, O>,
    {
        let id = TypeId::of::<R>();
        self.handlers.retain(|(t, _)| *t != id);
        self.handlers.push((id, handler::<S, R, O>));
    }

    /// `true` when the stage answers requests like `call`'s.
    pub(crate) fn answers(&self, call: &Call) -> bool {
        self.handlers.iter().any(|(t, _)| *t == call.type_id)
    }

    /// Hands `call` to the stage's handler and sends the reply back.
    pub(crate) async fn answer(&self, stage: &mut S, call: Call, ctx: &mut Context<O>) {
        let Call {
            request,
            type_id,
            reply,
            ..
        } = call;
        let Some(&(_, handle)) = self.handlers.iter().find(|(t, _)| *t == type_id) else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(CallError::Unhandled));
            }
            return;
        };
        let answer = handle(stage, request, ctx).await;
        if let Some(reply) = reply {
            // The caller may have timed out: the reply is then dropped.
            let _ = reply.send(Ok(answer));
        }
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("request", &self.type_name)
            .field("reply", &self.reply.is_some())
            .finish()
    }
}
