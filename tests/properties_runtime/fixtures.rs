//! The fixture stages: a producer, a producer-consumer and a consumer that
//! record every callback, take commands as info messages and panic on cue.

use super::*;

/// An event: the index of the stage that emitted it and its place in that
/// stage's emission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ev {
    pub(crate) src: usize,
    pub(crate) seq: u64,
}

/// The most events a producer emits from one callback.
pub(crate) const CAP: u64 = 64;

/// The message of every panic the tests inject.
pub(crate) const PANIC: &str = "injected panic";

/// Info messages the fixture stages understand.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Emit this many events now, whatever the demand.
    Emit(u64),
    /// Emit what is owed (producers only).
    EmitOwed,
    /// Ask on an upstream subscription from inside the stage (`Context::ask`).
    Ask(SubscriptionId, u64),
    /// Panic in `handle_info`.
    Panic,
}

/// A callback that panics the next time it runs once armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trap {
    /// `handle_demand` or `handle_events`.
    Work,
    /// `handle_subscribe`, on either side.
    Subscribe,
    /// `handle_cancel`, on either side.
    Cancel,
    /// `terminate` (the panic is caught and the exit reason stays).
    Terminate,
}

/// One callback, as a stage recorded it.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// This stage subscribed to a producer (consumer side).
    Subscribed(SubscriptionId),
    /// A batch (automatic demand: a chunk) arrived.
    Events(SubscriptionId, Vec<Ev>),
    /// Demand was asked on an upstream subscription: by the test through the
    /// handle (recorded before the call) or by the stage from a callback.
    Asked {
        sub: SubscriptionId,
        demand: u64,
        by_handle: bool,
    },
    /// An upstream subscription ended.
    Cancelled(SubscriptionId, CancelReason),
    /// A consumer subscribed to this stage (producer side).
    Accepted(SubscriptionId),
    /// A downstream subscription ended.
    Released(SubscriptionId),
    /// `handle_demand` ran.
    Demand(u64),
    /// `handle_dropped` ran.
    Dropped(usize),
    /// An injected panic is about to happen.
    Panicking,
    /// `terminate` ran.
    Terminated(Reason),
}

/// What a stage shares with the test: its record, its emission count and its trap.
#[derive(Default)]
pub(crate) struct Probe {
    pub(crate) log: Mutex<Vec<Entry>>,
    pub(crate) emitted: AtomicU64,
    pub(crate) armed: Mutex<Option<Trap>>,
}

impl Probe {
    pub(crate) fn push(&self, entry: Entry) {
        self.log.lock().push(entry);
    }

    pub(crate) fn arm(&self, trap: Trap) {
        *self.armed.lock() = Some(trap);
    }

    pub(crate) fn sprung(&self, trap: Trap) -> bool {
        let mut armed = self.armed.lock();
        let hit = *armed == Some(trap);
        if hit {
            *armed = None;
        }
        hit
    }

    pub(crate) fn trip(&self, trap: Trap) {
        if self.sprung(trap) {
            self.panic();
        }
    }

    pub(crate) fn panic(&self) -> ! {
        self.push(Entry::Panicking);
        panic!("{PANIC}");
    }

    /// Emits the next `n` events of stage `src`.
    pub(crate) fn emit(&self, src: usize, next: &mut u64, n: u64, ctx: &mut Context<Ev>) {
        ctx.emit_all((*next..*next + n).map(|seq| Ev { src, seq }));
        *next += n;
        self.emitted.fetch_add(n, Ordering::SeqCst);
    }
}

/// How a producer answers demand.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SourceKind {
    /// Exactly what is owed.
    Exact,
    /// Half of what is owed; the rest waits for `Cmd::EmitOwed`.
    Lazy,
    /// What is owed and this many more.
    Eager(u64),
    /// Nothing; only `Cmd::EmitOwed` and `Cmd::Emit` emit.
    Silent,
}

/// A counter-like producer with a budget of demand-driven events, so every
/// pipeline goes quiet eventually.
pub(crate) struct Source {
    pub(crate) me: usize,
    pub(crate) kind: SourceKind,
    pub(crate) budget: u64,
    pub(crate) next: u64,
    pub(crate) owed: u64,
    pub(crate) probe: Arc<Probe>,
}

impl Source {
    pub(crate) fn emit_owed(&mut self, n: u64, ctx: &mut Context<Ev>) {
        let n = n.min(CAP).min(self.budget);
        self.owed -= n.min(self.owed);
        self.budget -= n;
        self.probe.emit(self.me, &mut self.next, n, ctx);
    }
}

impl Producer for Source {
    type Event = Ev;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<Ev>) {
        self.probe.push(Entry::Demand(demand));
        self.probe.trip(Trap::Work);
        self.owed = self.owed.saturating_add(demand);
        let n = match self.kind {
            SourceKind::Exact => self.owed,
            SourceKind::Lazy => self.owed / 2,
            SourceKind::Eager(extra) => self.owed.saturating_add(extra),
            SourceKind::Silent => 0,
        };
        self.emit_owed(n, ctx);
    }

    async fn handle_subscribe(&mut self, sub: SubscriptionId, _: &mut Context<Ev>) {
        self.probe.push(Entry::Accepted(sub));
        self.probe.trip(Trap::Subscribe);
    }

    async fn handle_cancel(&mut self, sub: SubscriptionId, _: &CancelReason, _: &mut Context<Ev>) {
        self.probe.push(Entry::Released(sub));
        self.probe.trip(Trap::Cancel);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Ev>) {
        match info.downcast::<Cmd>() {
            Ok(Cmd::Emit(n)) => self.probe.emit(self.me, &mut self.next, n, ctx),
            Ok(Cmd::EmitOwed) => self.emit_owed(self.owed, ctx),
            Ok(Cmd::Panic) => self.probe.panic(),
            Ok(Cmd::Ask(..)) | Err(_) => {}
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.probe.push(Entry::Dropped(dropped));
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.probe.push(Entry::Terminated(reason.clone()));
        if self.probe.sprung(Trap::Terminate) {
            panic!("{PANIC}");
        }
    }
}

/// What a producer-consumer makes of each batch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RelayKind {
    /// One event out per event in.
    Double,
    /// Drops the events whose sequence number is a multiple of 3.
    Filter,
    /// Two events out per event in.
    FlatMap,
}

/// A producer-consumer with automatic demand upstream; it numbers its own output.
pub(crate) struct Relay {
    pub(crate) me: usize,
    pub(crate) kind: RelayKind,
    pub(crate) next: u64,
    pub(crate) probe: Arc<Probe>,
}

impl ProducerConsumer for Relay {
    type In = Ev;
    type Out = Ev;

    async fn handle_events(
        &mut self,
        events: Vec<Ev>,
        from: SubscriptionId,
        ctx: &mut Context<Ev>,
    ) {
        let n = match self.kind {
            RelayKind::Double => events.len() as u64,
            RelayKind::Filter => events.iter().filter(|e| e.seq % 3 != 0).count() as u64,
            RelayKind::FlatMap => 2 * events.len() as u64,
        };
        self.probe.push(Entry::Events(from, events));
        self.probe.trip(Trap::Work);
        self.probe.emit(self.me, &mut self.next, n, ctx);
    }

    async fn handle_subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        _: &mut Context<Ev>,
    ) -> DemandMode {
        self.probe.push(match peer {
            Peer::Producer => Entry::Subscribed(sub),
            Peer::Consumer => Entry::Accepted(sub),
        });
        self.probe.trip(Trap::Subscribe);
        DemandMode::Automatic
    }

    async fn handle_cancel(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        _: &mut Context<Ev>,
    ) {
        self.probe.push(match peer {
            Peer::Producer => Entry::Cancelled(sub, reason.clone()),
            Peer::Consumer => Entry::Released(sub),
        });
        self.probe.trip(Trap::Cancel);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Ev>) {
        match info.downcast::<Cmd>() {
            Ok(Cmd::Emit(n)) => self.probe.emit(self.me, &mut self.next, n, ctx),
            Ok(Cmd::Ask(sub, demand)) => {
                self.probe.push(Entry::Asked {
                    sub,
                    demand,
                    by_handle: false,
                });
                ctx.ask(sub, demand);
            }
            Ok(Cmd::Panic) => self.probe.panic(),
            Ok(Cmd::EmitOwed) | Err(_) => {}
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.probe.push(Entry::Dropped(dropped));
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.probe.push(Entry::Terminated(reason.clone()));
        if self.probe.sprung(Trap::Terminate) {
            panic!("{PANIC}");
        }
    }
}

/// A consumer that records everything, with automatic or manual demand.
pub(crate) struct Sink {
    pub(crate) manual: bool,
    pub(crate) probe: Arc<Probe>,
}

impl Consumer for Sink {
    type Event = Ev;

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        _: &mut ConsumerContext,
    ) -> DemandMode {
        self.probe.push(Entry::Subscribed(sub));
        self.probe.trip(Trap::Subscribe);
        if self.manual {
            DemandMode::Manual
        } else {
            DemandMode::Automatic
        }
    }

    async fn handle_events(
        &mut self,
        events: Vec<Ev>,
        from: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        self.probe.push(Entry::Events(from, events));
        self.probe.trip(Trap::Work);
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        _: &mut ConsumerContext,
    ) {
        self.probe.push(Entry::Cancelled(sub, reason.clone()));
        self.probe.trip(Trap::Cancel);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut ConsumerContext) {
        match info.downcast::<Cmd>() {
            Ok(Cmd::Ask(sub, demand)) => {
                self.probe.push(Entry::Asked {
                    sub,
                    demand,
                    by_handle: false,
                });
                ctx.ask(sub, demand);
            }
            Ok(Cmd::Panic) => self.probe.panic(),
            Ok(_) | Err(_) => {}
        }
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.probe.push(Entry::Terminated(reason.clone()));
        if self.probe.sprung(Trap::Terminate) {
            panic!("{PANIC}");
        }
    }
}

/// Keeps the injected panics out of the test output; other panics print as usual.
pub(crate) fn quiet_injected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if message != Some(PANIC) {
                default(info);
            }
        }));
    });
}
