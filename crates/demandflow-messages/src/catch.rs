//! Catching panics in user handlers.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::Poll;

use tokio_util::sync::CancellationToken;

/// Runs `future` to completion, catching a panic in any poll as `Err(message)`.
pub(crate) async fn catch_panic<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    })
    .await
}

/// Runs `future` like [`catch_panic`], giving up with `None` once `abort` is
/// cancelled. A future that finishes at its first poll (most handlers) never
/// touches the token.
pub(crate) async fn catch_panic_or_abort<F: Future>(
    future: F,
    abort: &CancellationToken,
) -> Option<Result<F::Output, String>> {
    let mut future = pin!(future);
    let mut cancelled = None;
    std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => return Poll::Ready(Some(Ok(value))),
            Err(payload) => return Poll::Ready(Some(Err(panic_message(&*payload)))),
            Ok(Poll::Pending) => {}
        }
        // The handler waits: from now on, also wait for the abort.
        let cancelled = cancelled.get_or_insert_with(|| Box::pin(abort.cancelled()));
        cancelled.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Runs `f`, catching a panic as `Err(message)`.
pub(crate) fn catch_panic_sync<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
