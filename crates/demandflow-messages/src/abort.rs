//! Running a user handler that a drain's deadline or a stop may abandon.
//!
//! Panics are caught by the runtime's [`catch_panic`], the one panic catcher of
//! demandflow; this module only adds the way out when the topology gives up on
//! a handler that is still waiting.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use demandflow_runtime::catch_panic;
use tokio_util::sync::CancellationToken;

/// Runs `future` to completion like [`catch_panic`] (a panic in any poll is
/// `Err(message)`), giving up with `None` once `abort` is cancelled.
///
/// A future that finishes at its first poll (most handlers) never touches the
/// token: it is only waited on once the handler waits.
pub(crate) async fn catch_panic_or_abort<F: Future>(
    future: F,
    abort: &CancellationToken,
) -> Option<Result<F::Output, String>> {
    let mut handled = pin!(catch_panic(future));
    let mut cancelled = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(handled) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(handled));
        }
        let cancelled = cancelled.get_or_insert_with(|| Box::pin(abort.cancelled()));
        cancelled.as_mut().poll(cx).map(|()| None)
    })
    .await
}
