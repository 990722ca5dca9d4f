//! Catching panics in user code: the one place demandflow turns a panic into
//! a message or an exit [`Reason`].
//!
//! The engine catches panics of stage callbacks here, and the supervisors catch
//! panics of worker code and child factories with the public functions below, so
//! every crate describes a panic the same way.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use demandflow_core::Reason;

/// Polls a future, catching a panic in any poll as `Err(payload)`.
pub(crate) struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(future: F) -> Self {
        CatchUnwind(Box::pin(future))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        poll_catching(self.0.as_mut(), cx)
    }
}

/// Polls `future` once, turning a panic in the poll into `Err(payload)`.
fn poll_catching<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Box<dyn Any + Send>>> {
    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
        Err(payload) => Poll::Ready(Err(payload)),
    }
}

/// Runs `future` to completion, catching a panic in any of its polls as
/// `Err(message)` (see [`panic_message`]).
///
/// Low-level: for code that runs user futures outside a stage, such as a
/// supervisor's workers. Stage callbacks are already covered by the runtime.
/// The future is pinned in place: no allocation.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::catch_panic;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(catch_panic(async { 7 }).await, Ok(7));
/// let failed = catch_panic(async { panic!("worker broke") }).await;
/// assert_eq!(failed, Err::<(), _>("worker broke".to_owned()));
/// # }
/// ```
pub async fn catch_panic<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        poll_catching(future.as_mut(), cx).map_err(|payload| panic_message(&*payload))
    })
    .await
}

/// Calls `f`, catching a panic as `Err(message)` (see [`panic_message`]).
///
/// Low-level, like [`catch_panic`]: for calling user code such as a factory
/// outside a stage.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::catch_call;
///
/// assert_eq!(catch_call(|| 2 + 2), Ok(4));
/// assert_eq!(catch_call(|| -> u8 { panic!("no") }), Err("no".to_owned()));
/// ```
pub fn catch_call<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// The message of a panic payload: the `&str` or `String` given to `panic!`,
/// or a placeholder for any other payload.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::panic_message;
///
/// let payload = std::panic::catch_unwind(|| panic!("code {}", 7)).unwrap_err();
/// assert_eq!(panic_message(&*payload), "code 7");
/// ```
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The exit reason for a panic payload: [`Reason::Panic`] with its message.
pub(crate) fn panic_reason(payload: &(dyn Any + Send)) -> Reason {
    Reason::Panic(panic_message(payload).into())
}
