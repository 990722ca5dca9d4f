//! Running a program: the world of started stages, subscriptions and
//! records, and how each step is applied to it.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Source,
    Relay,
    Sink,
}

pub(crate) struct StageRec {
    pub(crate) kind: Kind,
    pub(crate) handle: Option<Handle>,
    pub(crate) probe: Arc<Probe>,
    pub(crate) monitor: StageMonitor,
    pub(crate) capacity: Option<usize>,
    /// The partitions of a partitioned producer.
    pub(crate) parts: Option<Parts>,
    /// A consumer with manual demand.
    pub(crate) manual: bool,
    /// Reasons the test stopped it with.
    pub(crate) stops: Vec<Reason>,
}

/// A subscription the test made: stage indices, options, demand mode.
#[derive(Clone, Debug)]
pub(crate) struct SubRec {
    pub(crate) sub: SubscriptionId,
    pub(crate) consumer: usize,
    pub(crate) producer: usize,
    pub(crate) max: u64,
    pub(crate) min: u64,
    pub(crate) cancel: CancelMode,
    pub(crate) auto: bool,
    /// The partition it asked for, on a partitioned producer.
    pub(crate) partition: Option<usize>,
    /// A `resubscribe` replaced it: its cancel mode may not apply.
    pub(crate) replaced: bool,
}

/// Awaits `f`, failing the case when it never completes: with the paused clock
/// the timeout only fires once every task is idle, so a hang fails at once.
pub(crate) async fn bounded<F: Future>(paused: bool, what: impl fmt::Display, f: F) -> F::Output {
    let limit = Duration::from_secs(if paused { 3600 } else { 60 });
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} never completed"),
    }
}

/// Waits until `cond` holds, or gives up after a bound: yielding on the paused
/// clock, sleeping a millisecond at a time on the real one.
pub(crate) async fn eventually(paused: bool, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
        if !paused {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

pub(crate) struct World {
    pub(crate) paused: bool,
    pub(crate) stages: Vec<StageRec>,
    pub(crate) subs: Vec<SubRec>,
    pub(crate) violations: Vec<String>,
}

impl World {
    pub(crate) fn start(program: &Program, paused: bool) -> World {
        let mut stages = Vec::new();
        for (me, spec) in program.sources.iter().enumerate() {
            let probe = Arc::new(Probe::default());
            let mut builder = producer(Source {
                me,
                kind: spec.kind,
                budget: spec.budget,
                next: 0,
                owed: 0,
                probe: probe.clone(),
            });
            if let Some((size, keep)) = spec.buffer {
                builder = builder.buffer_size(size).buffer_keep(keep);
            }
            let started = match spec.parts {
                Some(parts) => builder.dispatcher(parts.dispatcher()).start(),
                None => builder.start(),
            };
            let handle = Handle::Source(started.unwrap());
            let queues = spec.parts.map_or(0, |p| {
                p.n * p
                    .queue_capacity
                    .unwrap_or(DEFAULT_PARTITION_QUEUE_CAPACITY.get())
            });
            stages.push(StageRec {
                kind: Kind::Source,
                parts: spec.parts,
                monitor: handle.monitor(),
                handle: Some(handle),
                probe,
                capacity: Some(spec.buffer.map_or(DEFAULT_BUFFER_SIZE, |b| b.0) + queues),
                manual: false,
                stops: Vec::new(),
            });
        }
        for spec in &program.relays {
            let probe = Arc::new(Probe::default());
            let mut builder = producer_consumer(Relay {
                me: stages.len(),
                kind: spec.kind,
                next: 0,
                probe: probe.clone(),
            });
            if let Some((size, keep)) = spec.buffer {
                builder = builder.buffer_size(size).buffer_keep(keep);
            }
            let handle = Handle::Relay(builder.start().unwrap());
            stages.push(StageRec {
                kind: Kind::Relay,
                monitor: handle.monitor(),
                handle: Some(handle),
                probe,
                capacity: spec.buffer.map(|b| b.0),
                parts: None,
                manual: false,
                stops: Vec::new(),
            });
        }
        for &manual in &program.sinks {
            let probe = Arc::new(Probe::default());
            let sink = Sink {
                manual,
                probe: probe.clone(),
            };
            let handle = Handle::Sink(consumer(sink).start().unwrap());
            stages.push(StageRec {
                kind: Kind::Sink,
                monitor: handle.monitor(),
                handle: Some(handle),
                probe,
                capacity: None,
                parts: None,
                manual,
                stops: Vec::new(),
            });
        }
        World {
            paused,
            stages,
            subs: Vec::new(),
            violations: Vec::new(),
        }
    }

    pub(crate) fn indices(&self, kinds: &[Kind]) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&i| kinds.contains(&self.stages[i].kind))
            .collect()
    }

    pub(crate) fn handle(&self, stage: usize) -> &Handle {
        self.stages[stage]
            .handle
            .as_ref()
            .expect("handles live until teardown")
    }

    /// Waits until stage `stage` has stopped: a handle said it was not running.
    pub(crate) async fn expect_stopped(&self, stage: usize, why: &str) {
        let monitor = self.stages[stage].monitor.clone();
        bounded(
            self.paused,
            format_args!("stage {stage} said {why} but never stopped"),
            monitor.wait(),
        )
        .await;
    }

    pub(crate) async fn apply(&mut self, op: &Op) {
        match op {
            Op::Subscribe {
                consumer,
                producer,
                partition,
                max,
                min,
                cancel,
                wait,
            } => {
                let consumers = self.indices(&[Kind::Relay, Kind::Sink]);
                let producers = self.indices(&[Kind::Source, Kind::Relay]);
                let sources = self.indices(&[Kind::Source]);
                let c = consumers[consumer % consumers.len()];
                let mut p = producers[producer % producers.len()];
                if self.stages[c].kind == Kind::Relay && p >= c {
                    p = sources[producer % sources.len()];
                }
                let mut options = SubscribeOptions::new().max_demand(*max).cancel(*cancel);
                if let Some(min) = min {
                    options = options.min_demand(*min);
                }
                let partition = self.stages[p].parts.map(|parts| partition % (parts.n + 1));
                if let Some(partition) = partition {
                    options = options.partition(partition);
                }
                let to = self.handle(p).producer().unwrap();
                let result = bounded(
                    self.paused,
                    "subscribe_to",
                    self.handle(c).subscribe(&to, options, *wait),
                )
                .await;
                let auto = !self.stages[c].manual;
                let rec = move |sub| SubRec {
                    sub,
                    consumer: c,
                    producer: p,
                    max: *max,
                    min: min.unwrap_or(max / 2),
                    cancel: *cancel,
                    auto,
                    partition,
                    replaced: false,
                };
                let failed = result.is_err();
                match result {
                    Ok(sub) => self.subs.push(rec(sub)),
                    Err(SubscribeError::ProducerNotRunning) => {
                        self.expect_stopped(p, "ProducerNotRunning").await;
                    }
                    Err(SubscribeError::ConsumerNotRunning) => {
                        self.expect_stopped(c, "ConsumerNotRunning").await;
                    }
                    // A partition dispatcher refuses partitions that do not exist.
                    Err(SubscribeError::Refused(_)) if partition.is_some() => {}
                    Err(other) => {
                        check!(self, false, "subscribe {c} -> {p} failed: {other}");
                    }
                }
                // A failed subscribe may still have run the consumer's
                // `handle_subscribe` (and the producer may have accepted) before
                // the consumer stopped: its id is in the consumer's record.
                if failed {
                    self.register_unknown_subs(c, rec);
                }
            }
            Op::Cancel {
                sub,
                reason,
                from_producer,
                twice,
            } => {
                let Some(rec) = self.pick(*sub) else { return };
                let by = if *from_producer && self.stages[rec.producer].kind == Kind::Relay {
                    rec.producer
                } else {
                    rec.consumer
                };
                for _ in 0..if *twice { 2 } else { 1 } {
                    if self.handle(by).cancel(rec.sub, reason.clone()).is_err() {
                        self.expect_stopped(by, "NotRunning to cancel").await;
                    }
                }
            }
            Op::Resubscribe {
                sub,
                reason,
                max,
                cancel,
            } => {
                let Some(old) = self.pick(*sub) else { return };
                if let Some(r) = self.subs.iter_mut().find(|r| r.sub == old.sub) {
                    r.replaced = true;
                }
                let options = SubscribeOptions::new().max_demand(*max).cancel(*cancel);
                let options = match old.partition {
                    Some(partition) => options.partition(partition),
                    None => options,
                };
                let to = self.handle(old.producer).producer().unwrap();
                let c = old.consumer;
                let resubscribed =
                    self.handle(c)
                        .resubscribe(old.sub, reason.clone(), &to, options);
                let result = bounded(self.paused, "resubscribe", resubscribed).await;
                let rec = |sub| SubRec {
                    sub,
                    max: *max,
                    min: max / 2,
                    cancel: *cancel,
                    replaced: false,
                    ..old.clone()
                };
                match result {
                    Ok(sub) => self.subs.push(rec(sub)),
                    Err(SubscribeError::ProducerNotRunning) => {
                        self.expect_stopped(old.producer, "ProducerNotRunning")
                            .await;
                    }
                    Err(SubscribeError::ConsumerNotRunning) => {
                        self.expect_stopped(c, "ConsumerNotRunning").await;
                    }
                    Err(SubscribeError::Refused(_)) if old.partition.is_some() => {}
                    Err(ref other) => {
                        check!(self, false, "resubscribe {} failed: {other}", old.sub);
                    }
                }
                if result.is_err() {
                    self.register_unknown_subs(c, rec);
                }
            }
            Op::Flow { stage, accumulate } => {
                let producers = self.indices(&[Kind::Source, Kind::Relay]);
                let p = producers[stage % producers.len()];
                let flow = if *accumulate {
                    DemandFlow::Accumulate
                } else {
                    DemandFlow::Forward
                };
                if self.handle(p).set_demand_flow(flow).is_err() {
                    self.expect_stopped(p, "NotRunning to switch its demand flow")
                        .await;
                }
            }
            Op::Ask {
                sub,
                demand,
                via_info,
            } => {
                let Some(rec) = self.pick(*sub) else { return };
                let sent = if *via_info {
                    self.handle(rec.consumer).send(Cmd::Ask(rec.sub, *demand))
                } else {
                    self.stages[rec.consumer].probe.push(Entry::Asked {
                        sub: rec.sub,
                        demand: *demand,
                        by_handle: true,
                    });
                    self.handle(rec.consumer).ask(rec.sub, *demand)
                };
                if sent.is_err() {
                    self.expect_stopped(rec.consumer, "NotRunning to ask").await;
                }
            }
            Op::Emit { stage, events } => {
                let producers = self.indices(&[Kind::Source, Kind::Relay]);
                let p = producers[stage % producers.len()];
                if self.handle(p).send(Cmd::Emit(*events)).is_err() {
                    self.expect_stopped(p, "NotRunning to emit").await;
                }
            }
            Op::EmitOwed { stage } => {
                let sources = self.indices(&[Kind::Source]);
                let p = sources[stage % sources.len()];
                if self.handle(p).send(Cmd::EmitOwed).is_err() {
                    self.expect_stopped(p, "NotRunning to emit").await;
                }
            }
            Op::Stop { stage, reason } => {
                let s = stage % self.stages.len();
                self.stages[s].stops.push(reason.clone());
                let stopped =
                    bounded(self.paused, "stop", self.handle(s).stop(reason.clone())).await;
                if stopped.is_err() {
                    self.expect_stopped(s, "NotRunning to stop").await;
                }
                check!(
                    self,
                    self.stages[s].monitor.exit_reason().is_some(),
                    "stage {s} is running after stop() returned"
                );
            }
            Op::Panic { stage, trap } => {
                let s = stage % self.stages.len();
                match trap {
                    Some(trap) => self.stages[s].probe.arm(*trap),
                    None => {
                        if self.handle(s).send(Cmd::Panic).is_err() {
                            self.expect_stopped(s, "NotRunning to panic").await;
                        }
                    }
                }
            }
            Op::Yield(n) => {
                for _ in 0..*n {
                    tokio::task::yield_now().await;
                }
            }
            Op::Advance(ms) => {
                if self.paused {
                    tokio::time::advance(Duration::from_millis(u64::from(*ms))).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            Op::Settle => {
                self.quiesce().await;
            }
        }
    }

    /// Registers the subscriptions in stage `c`'s record that the test does not
    /// know: a failed subscribe may still have run the consumer's
    /// `handle_subscribe` (and the producer may have accepted) before the
    /// consumer stopped.
    pub(crate) fn register_unknown_subs(
        &mut self,
        c: usize,
        rec: impl Fn(SubscriptionId) -> SubRec,
    ) {
        let known: HashSet<SubscriptionId> = self.subs.iter().map(|r| r.sub).collect();
        let unknown: Vec<SubscriptionId> = self.stages[c]
            .probe
            .log
            .lock()
            .iter()
            .filter_map(|e| match e {
                Entry::Subscribed(sub) if !known.contains(sub) => Some(*sub),
                _ => None,
            })
            .collect();
        self.subs.extend(unknown.into_iter().map(rec));
    }

    pub(crate) fn pick(&self, n: usize) -> Option<SubRec> {
        if self.subs.is_empty() {
            None
        } else {
            Some(self.subs[n % self.subs.len()].clone())
        }
    }
}
