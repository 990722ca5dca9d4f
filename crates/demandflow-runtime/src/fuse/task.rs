//! The one task a fused chain's stages run in.
//!
//! Each stage is the very engine an unfused stage runs, polled here instead of
//! by the tokio scheduler: a stage's mailbox wakes the stage through a waker of
//! this task's own, which only marks the stage as ready. While this task is
//! being polled it keeps polling ready stages, so an ask or a batch one stage
//! sends another in the chain is handled in the same poll, without a wake-up of
//! the task, a trip through the scheduler or another worker thread. Only a
//! wake from outside (a handle's message, a timer, another task's stage) wakes
//! the task itself.
//!
//! The task still yields: after `ROUND_LIMIT` stage polls, or once tokio's
//! cooperative budget is spent (each message a stage takes from its mailbox
//! counts towards it, as in an unfused stage), it wakes itself and returns, so
//! an endless chain shares its worker with the other tasks like any stage does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;

use crate::engine::StageTask;

/// Stage polls in one poll of the task before it yields to the scheduler.
const ROUND_LIMIT: u32 = 1024;

/// What the stages' wakers share with the task.
struct Shared {
    /// Per stage: woken since it was last polled.
    woken: Vec<AtomicBool>,
    /// The task is inside its poll loop and will see any flag set now.
    polling: AtomicBool,
    /// The task's own waker, for wakes from outside its poll.
    task: Mutex<Option<Waker>>,
}

/// The waker of one stage.
struct StageWaker {
    shared: Arc<Shared>,
    index: usize,
}

impl Wake for StageWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken[self.index].store(true, Ordering::SeqCst);
        // Inside the poll loop the flag is enough: the loop looks again before
        // it returns (see `poll`).
        if !self.shared.polling.load(Ordering::SeqCst)
            && let Some(task) = &*self.shared.task.lock()
        {
            task.wake_by_ref();
        }
    }
}

/// The stages of one fused chain, run as one future.
pub(crate) struct Together {
    stages: Vec<(Option<StageTask>, Waker)>,
    shared: Arc<Shared>,
    running: usize,
}

impl Together {
    pub(crate) fn new(tasks: Vec<StageTask>) -> Together {
        let shared = Arc::new(Shared {
            // Every stage is polled once to start.
            woken: tasks.iter().map(|_| AtomicBool::new(true)).collect(),
            polling: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let running = tasks.len();
        let stages = tasks
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                let waker = Waker::from(Arc::new(StageWaker {
                    shared: shared.clone(),
                    index,
                }));
                (Some(task), waker)
            })
            .collect();
        Together {
            stages,
            shared,
            running,
        }
    }
}

impl Future for Together {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        {
            let mut task = this.shared.task.lock();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        this.shared.polling.store(true, Ordering::SeqCst);
        let mut polls = 0_u32;
        loop {
            let mut polled = false;
            // Tail first: on the first round each stage's subscription reaches
            // the stage before it ahead of that stage's `init`, so a head that
            // stops at once still tells the chain (as a down notice).
            for (index, (slot, waker)) in this.stages.iter_mut().enumerate().rev() {
                let Some(stage) = slot else { continue };
                if !this.shared.woken[index].swap(false, Ordering::SeqCst) {
                    continue;
                }
                polled = true;
                polls += 1;
                if stage
                    .as_mut()
                    .poll(&mut Context::from_waker(waker))
                    .is_ready()
                {
                    *slot = None;
                    this.running -= 1;
                }
            }
            if this.running == 0 {
                return Poll::Ready(());
            }
            if !polled {
                this.shared.polling.store(false, Ordering::SeqCst);
                // A wake that came from outside between the last look and the
                // store above saw `polling` still set and woke nobody: look once
                // more. A wake after the store wakes the task itself.
                if this
                    .shared
                    .woken
                    .iter()
                    .any(|woken| woken.load(Ordering::SeqCst))
                {
                    this.shared.polling.store(true, Ordering::SeqCst);
                    continue;
                }
                return Poll::Pending;
            }
            if polls >= ROUND_LIMIT || !tokio::task::coop::has_budget_remaining() {
                this.shared.polling.store(false, Ordering::SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}
