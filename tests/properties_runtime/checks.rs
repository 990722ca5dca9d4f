//! The checks of SEMANTICS.md §8 over a quiescent world: demand, order,
//! conservation of events, buffers, liveness and exit reasons.

use super::*;

/// One subscription as its consumer's record tells it.
#[derive(Default)]
pub(crate) struct Flow {
    pub(crate) subscribed: bool,
    pub(crate) ended: bool,
    /// Every ask made on it so far: by the handle, from callbacks, and the
    /// automatic asks of SEMANTICS.md §2.
    pub(crate) asked: u128,
    pub(crate) got: u64,
    /// Automatic demand as §2 counts it: `(max, min, pending)`.
    pub(crate) auto: Option<(u64, u64, u64)>,
    pub(crate) last: Option<u64>,
}

impl World {
    /// Switches every producing stage back to forwarding demand, so what it
    /// accumulated is replayed before the checks.
    pub(crate) fn forward_all(&self) {
        for s in &self.stages {
            if let Some(h) = &s.handle {
                let _ = h.set_demand_flow(DemandFlow::Forward);
            }
        }
    }

    /// Waits until two rounds of `stats()` round trips through every stage see
    /// the same stats, records and emission counts, and returns those stats
    /// (`None` for a stopped stage).
    pub(crate) async fn quiesce(&self) -> Vec<Option<StageStats>> {
        let mut previous = None;
        for _ in 0..1000 {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let mut stats = Vec::new();
            for s in &self.stages {
                let h = s.handle.as_ref().expect("handles live until teardown");
                stats.push(bounded(self.paused, "stats", h.stats()).await.ok());
            }
            let marks: Vec<(usize, u64)> = self
                .stages
                .iter()
                .map(|s| {
                    (
                        s.probe.log.lock().len(),
                        s.probe.emitted.load(Ordering::SeqCst),
                    )
                })
                .collect();
            let now = (stats, marks);
            if previous.as_ref() == Some(&now) {
                return now.0;
            }
            previous = Some(now);
        }
        panic!("the pipeline never became quiescent");
    }

    /// Checks every invariant on a quiescent pipeline; returns which stages run.
    pub(crate) async fn check(&mut self) -> Vec<bool> {
        let stats = self.quiesce().await;
        let n = self.stages.len();
        let logs: Vec<Vec<Entry>> = self
            .stages
            .iter()
            .map(|s| s.probe.log.lock().clone())
            .collect();
        let emitted: Vec<u64> = self
            .stages
            .iter()
            .map(|s| s.probe.emitted.load(Ordering::SeqCst))
            .collect();
        let by_sub: HashMap<SubscriptionId, SubRec> =
            self.subs.iter().map(|r| (r.sub, r.clone())).collect();
        let running: Vec<bool> = stats.iter().map(Option::is_some).collect();
        let mut exits = vec![None; n];
        for i in 0..n {
            if running[i] {
                check!(
                    self,
                    self.stages[i].monitor.exit_reason().is_none(),
                    "stage {i} answers stats but has an exit reason"
                );
            } else {
                let monitor = self.stages[i].monitor.clone();
                exits[i] = Some(bounded(self.paused, "exit", monitor.wait()).await);
            }
        }

        // Records, consumer side: demand, batches, order, ends.
        let mut flows: HashMap<SubscriptionId, Flow> = HashMap::new();
        let mut seen: HashMap<usize, HashSet<u64>> = HashMap::new();
        let mut delivered: HashMap<SubscriptionId, Vec<u64>> = HashMap::new();
        for (i, log) in logs.iter().enumerate() {
            let mut terminated = false;
            for entry in log {
                check!(
                    self,
                    !terminated
                        || matches!(
                            entry,
                            Entry::Asked {
                                by_handle: true,
                                ..
                            }
                        ),
                    "stage {i}: callback after terminate: {entry:?}"
                );
                match entry {
                    Entry::Subscribed(sub) => {
                        let Some(rec) = by_sub.get(sub) else {
                            check!(self, false, "stage {i}: unknown subscription {sub}");
                            continue;
                        };
                        check!(
                            self,
                            rec.consumer == i,
                            "stage {i}: {sub} belongs to {}",
                            rec.consumer
                        );
                        let flow = flows.entry(*sub).or_default();
                        check!(self, !flow.subscribed, "{sub}: subscribed twice");
                        flow.subscribed = true;
                        if rec.auto {
                            flow.asked += u128::from(rec.max);
                            flow.auto = Some((rec.max, rec.min, rec.max));
                        }
                    }
                    Entry::Asked { sub, demand, .. } => {
                        flows.entry(*sub).or_default().asked += u128::from(*demand);
                    }
                    Entry::Events(sub, events) => {
                        let Some(rec) = by_sub.get(sub) else {
                            check!(self, false, "stage {i}: events on unknown {sub}");
                            continue;
                        };
                        let flow = flows.entry(*sub).or_default();
                        check!(
                            self,
                            flow.subscribed && !flow.ended,
                            "{sub}: batch {events:?} outside the subscription (subscribed {}, ended {})",
                            flow.subscribed,
                            flow.ended
                        );
                        check!(self, !events.is_empty(), "{sub}: empty batch");
                        for e in events {
                            check!(
                                self,
                                e.src == rec.producer,
                                "{sub}: {e:?} is not from stage {}",
                                rec.producer
                            );
                            check!(
                                self,
                                flow.last.is_none_or(|last| e.seq > last),
                                "{sub}: {e:?} after seq {:?}",
                                flow.last
                            );
                            flow.last = Some(e.seq);
                            check!(
                                self,
                                seen.entry(e.src).or_default().insert(e.seq),
                                "{e:?} delivered twice"
                            );
                            check!(self, e.seq < emitted[e.src], "{e:?} was never emitted");
                            if let Some(parts) = self.stages[rec.producer].parts {
                                check!(
                                    self,
                                    parts.route(e) == rec.partition,
                                    "{sub}: {e:?} is not for partition {:?}",
                                    rec.partition
                                );
                            }
                            delivered.entry(*sub).or_default().push(e.seq);
                        }
                        let len = events.len() as u64;
                        flow.got += len;
                        check!(
                            self,
                            u128::from(flow.got) <= flow.asked,
                            "{sub}: {} events delivered, {} asked",
                            flow.got,
                            flow.asked
                        );
                        if let Some((max, min, pending)) = &mut flow.auto {
                            check!(
                                self,
                                len <= *max - *min,
                                "{sub}: chunk of {len} with max {max} min {min}"
                            );
                            *pending = pending.saturating_sub(len);
                            if *pending <= *min {
                                flow.asked += u128::from(*max - *pending);
                                *pending = *max;
                            }
                        }
                    }
                    Entry::Cancelled(sub, reason) => {
                        let flow = flows.entry(*sub).or_default();
                        check!(
                            self,
                            flow.subscribed,
                            "{sub}: cancelled ({reason}) but never subscribed"
                        );
                        check!(self, !flow.ended, "{sub}: cancel callback ran twice");
                        flow.ended = true;
                    }
                    Entry::Terminated(_) => terminated = true,
                    _ => {}
                }
            }
        }

        // Records, producer side.
        let mut accepted = vec![HashSet::new(); n];
        let mut released = vec![HashSet::new(); n];
        let mut reported = vec![0_u64; n];
        for j in 0..n {
            for entry in &logs[j] {
                match entry {
                    Entry::Accepted(sub) => {
                        check!(
                            self,
                            by_sub.get(sub).is_some_and(|r| r.producer == j),
                            "stage {j} accepted {sub}, not its subscription"
                        );
                        check!(
                            self,
                            accepted[j].insert(*sub),
                            "stage {j} accepted {sub} twice"
                        );
                    }
                    Entry::Released(sub) => {
                        check!(
                            self,
                            accepted[j].contains(sub),
                            "stage {j} released {sub} it never accepted"
                        );
                        check!(
                            self,
                            released[j].insert(*sub),
                            "stage {j} released {sub} twice"
                        );
                    }
                    Entry::Demand(d) => check!(self, *d > 0, "stage {j}: handle_demand(0)"),
                    Entry::Dropped(d) => {
                        check!(self, *d > 0, "stage {j}: handle_dropped(0)");
                        reported[j] += *d as u64;
                    }
                    _ => {}
                }
            }
        }
        // Per key, through a partition dispatcher, events arrive in emission
        // order, across the successive subscriptions of a partition too. A
        // partition that had several subscriptions at once shares its events
        // among them: there, each subscription gets its events in order.
        for (j, log) in logs.iter().enumerate() {
            let Some(parts) = self.stages[j].parts else {
                continue;
            };
            let accepted_in_order: Vec<&SubRec> = log
                .iter()
                .filter_map(|e| match e {
                    Entry::Accepted(sub) => by_sub.get(sub),
                    _ => None,
                })
                .collect();
            let mut shared: HashSet<usize> = HashSet::new();
            let mut live: Vec<&SubRec> = Vec::new();
            for entry in log.iter() {
                match entry {
                    Entry::Accepted(sub) => {
                        if let Some(r) = by_sub.get(sub) {
                            if live.iter().any(|l| l.partition == r.partition) {
                                shared.extend(r.partition);
                            }
                            live.push(r);
                        }
                    }
                    Entry::Released(sub) => live.retain(|l| l.sub != *sub),
                    _ => {}
                }
            }
            for partition in 0..parts.n {
                let mut last: HashMap<u64, u64> = HashMap::new();
                for r in accepted_in_order
                    .iter()
                    .filter(|r| r.partition == Some(partition))
                {
                    if shared.contains(&partition) {
                        last.clear();
                    }
                    for &seq in delivered.get(&r.sub).into_iter().flatten() {
                        let key = seq % KEYS;
                        if let Some(&before) = last.get(&key) {
                            check!(
                                self,
                                seq > before,
                                "stage {j} partition {partition}: key {key} got {seq} on {} after {before}",
                                r.sub
                            );
                        }
                        last.insert(key, seq);
                    }
                }
            }
        }

        let subscribers = |j: usize| -> Vec<usize> {
            self.subs
                .iter()
                .filter(|r| r.producer == j && accepted[j].contains(&r.sub))
                .map(|r| r.consumer)
                .collect()
        };
        let flow_sum = |pick: &dyn Fn(&SubRec) -> bool, f: &dyn Fn(&Flow) -> u128| -> u128 {
            self.subs
                .iter()
                .filter(|r| pick(r))
                .filter_map(|r| flows.get(&r.sub))
                .map(f)
                .sum()
        };

        // Stats of running stages against the records.
        let mut found = Vec::new();
        for i in 0..n {
            let Some(s) = &stats[i] else { continue };
            let kind = self.stages[i].kind;
            let up: HashSet<SubscriptionId> = s
                .subscriptions
                .iter()
                .filter(|x| x.peer == Peer::Producer)
                .map(|x| x.sub)
                .collect();
            let down: HashSet<SubscriptionId> = s
                .subscriptions
                .iter()
                .filter(|x| x.peer == Peer::Consumer)
                .map(|x| x.sub)
                .collect();
            let live_up: HashSet<SubscriptionId> = self
                .subs
                .iter()
                .filter(|r| r.consumer == i)
                .filter(|r| flows.get(&r.sub).is_some_and(|f| f.subscribed && !f.ended))
                .map(|r| r.sub)
                .collect();
            if up != live_up {
                found.push(format!(
                    "stage {i}: upstream subscriptions {up:?}, records say {live_up:?}"
                ));
            }
            let live_down: HashSet<SubscriptionId> =
                accepted[i].difference(&released[i]).copied().collect();
            if down != live_down {
                found.push(format!(
                    "stage {i}: downstream subscriptions {down:?}, records say {live_down:?}"
                ));
            }
            let got_in = flow_sum(&|r| r.consumer == i, &|f| u128::from(f.got));
            if kind != Kind::Source {
                let handled = u64::try_from(got_in).unwrap();
                if s.events_in != handled + s.queued_in as u64 {
                    found.push(format!(
                        "stage {i}: events_in {} but {handled} handled and {} queued",
                        s.events_in, s.queued_in
                    ));
                }
                let unmet = flow_sum(&|r| r.consumer == i, &|f| {
                    f.asked.saturating_sub(u128::from(f.got))
                });
                if s.queued_in as u128 > unmet {
                    found.push(format!(
                        "stage {i}: {} queued, only {unmet} asked and not received",
                        s.queued_in
                    ));
                }
            }
            if kind == Kind::Sink {
                continue;
            }
            // Conservation: emitted = delivered + buffered + dropped (+ discarded
            // by a partition dispatcher: at most the events of the discarded key,
            // as events still in the producer's buffer are not routed yet).
            let accounted = s.events_out + s.buffered as u64 + s.events_dropped;
            let discardable = match self.stages[i].parts {
                Some(parts) if parts.discard => emitted[i].div_ceil(KEYS),
                _ => 0,
            };
            if accounted > emitted[i] || emitted[i] - accounted > discardable {
                found.push(format!(
                    "stage {i}: emitted {} but out {} + buffered {} + dropped {} = {accounted} ({discardable} discardable)",
                    emitted[i], s.events_out, s.buffered, s.events_dropped
                ));
            }
            if let Some(cap) = self.stages[i].capacity
                && s.buffered > cap
            {
                found.push(format!(
                    "stage {i}: {} buffered over a capacity of {cap}",
                    s.buffered
                ));
            }
            let all_subscribers_run = subscribers(i).iter().all(|&c| running[c]);
            if s.events_dropped < reported[i]
                || (all_subscribers_run && s.events_dropped != reported[i])
            {
                found.push(format!(
                    "stage {i}: events_dropped {} but handle_dropped reported {}",
                    s.events_dropped, reported[i]
                ));
            }
            let got_out =
                u64::try_from(flow_sum(&|r| r.producer == i, &|f| u128::from(f.got))).unwrap();
            if got_out > s.events_out {
                found.push(format!(
                    "stage {i}: {got_out} handled downstream, only {} delivered",
                    s.events_out
                ));
            }
            if all_subscribers_run {
                let queued: u64 = subscribers(i)
                    .iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter(|&&c| self.stages[c].kind == Kind::Relay)
                    .filter_map(|&c| stats[c].as_ref())
                    .map(|x| x.queued_in as u64)
                    .sum();
                if s.events_out > got_out + queued {
                    found.push(format!(
                        "stage {i}: delivered {} but consumers handled {got_out} and queue {queued}",
                        s.events_out
                    ));
                }
            }
            // Nothing waits in a buffer while a consumer has unmet demand (§3).
            // A partition's queue rightly waits while other partitions have demand.
            let waiting = self.stages[i].parts.is_none()
                && (s.buffered > 0 || (kind == Kind::Relay && s.queued_in > 0));
            for x in s.subscriptions.iter().filter(|x| x.peer == Peer::Consumer) {
                if waiting && x.pending_demand.unwrap_or(0) > 0 {
                    found.push(format!(
                        "stage {i}: {} buffered and {} queued while {} has demand {:?}",
                        s.buffered, s.queued_in, x.sub, x.pending_demand
                    ));
                }
            }
        }

        // Both ends of every live subscription agree.
        for r in &self.subs {
            let (Some(p), Some(c)) = (&stats[r.producer], &stats[r.consumer]) else {
                continue;
            };
            if !accepted[r.producer].contains(&r.sub) || c.queued_in > 0 {
                continue;
            }
            let at_p = p.subscriptions.iter().any(|x| x.sub == r.sub);
            let at_c = c.subscriptions.iter().any(|x| x.sub == r.sub);
            if at_p != at_c {
                found.push(format!(
                    "{}: live at the producer {at_p}, at the consumer {at_c}",
                    r.sub
                ));
            }
        }

        // Every stop is explained by the test, an injected panic or a cancel mode
        // (§6); every stopping cancel mode was applied.
        for i in 0..n {
            let panicked = logs[i].iter().any(|e| matches!(e, Entry::Panicking));
            let stopping_cancels: Vec<(SubscriptionId, Reason)> = logs[i]
                .iter()
                .filter_map(|e| match e {
                    Entry::Cancelled(sub, reason) => Some((*sub, reason.reason().clone())),
                    _ => None,
                })
                .filter(|(sub, reason)| {
                    by_sub
                        .get(sub)
                        .is_some_and(|r| r.cancel.stops_consumer(reason))
                })
                .collect();
            let terminations: Vec<&Reason> = logs[i]
                .iter()
                .filter_map(|e| match e {
                    Entry::Terminated(r) => Some(r),
                    _ => None,
                })
                .collect();
            match &exits[i] {
                Some(exit) => {
                    let explained = self.stages[i].stops.contains(exit)
                        || (panicked && *exit == Reason::Panic(PANIC.into()))
                        || stopping_cancels.iter().any(|(_, r)| r == exit);
                    if !explained {
                        found.push(format!(
                            "stage {i} stopped with {exit}: not stopped with it ({:?}), panicked {panicked}, stopping cancels {stopping_cancels:?}",
                            self.stages[i].stops
                        ));
                    }
                    if terminations != [exit] {
                        found.push(format!(
                            "stage {i} exited with {exit}, terminate saw {terminations:?}"
                        ));
                    }
                }
                None => {
                    if panicked || !terminations.is_empty() {
                        found.push(format!("stage {i} runs after panicking or terminating"));
                    }
                    let holding = stats[i].as_ref().is_some_and(|s| s.buffered > 0);
                    for (sub, reason) in &stopping_cancels {
                        let rec = &by_sub[sub];
                        let applies = accepted[rec.producer].contains(sub) && !rec.replaced;
                        if applies && !(self.stages[i].kind == Kind::Relay && holding) {
                            found.push(format!(
                                "stage {i} runs after {sub} ({:?}) ended with {reason}",
                                rec.cancel
                            ));
                        }
                    }
                }
            }
        }
        self.violations.extend(found);
        running
    }

    /// Stops every stage through its handle and drops the handles: every stage
    /// stops, with `Shutdown` for those still running, and no task or stage
    /// state is left.
    pub(crate) async fn teardown(&mut self, running: &[bool]) {
        for s in &mut self.stages {
            // A trap still armed would fire as the pipeline shuts down (a cancel
            // callback runs when a consumer leaves); a panicking `terminate`
            // changes no exit reason, so that one stays.
            let mut armed = s.probe.armed.lock();
            if *armed != Some(Trap::Terminate) {
                *armed = None;
            }
        }
        // Dropping the handles alone would only detach the pipeline, which keeps
        // running while it has work: stop every stage through its handle.
        for i in 0..self.stages.len() {
            if let Some(handle) = self.stages[i].handle.take() {
                let stop = async { each!(&handle, h => h.stop(Reason::Shutdown).await) };
                let _ = bounded(self.paused, format_args!("stopping stage {i}"), stop).await;
            }
        }
        for (i, &ran) in running.iter().enumerate() {
            let monitor = self.stages[i].monitor.clone();
            let exit = bounded(
                self.paused,
                format_args!("stage {i} after its handles were dropped"),
                monitor.wait(),
            )
            .await;
            if ran {
                check!(
                    self,
                    exit == Reason::Shutdown,
                    "stage {i} stopped with {exit} when its handles were dropped"
                );
            }
        }
        // A stage's task finishes (and drops its state) just after its exit is
        // published; on worker threads that can take a moment.
        let metrics = tokio::runtime::Handle::current().metrics();
        let probes: Vec<Arc<Probe>> = self.stages.iter().map(|s| s.probe.clone()).collect();
        eventually(self.paused, || {
            metrics.num_alive_tasks() == 0 && probes.iter().all(|p| Arc::strong_count(p) == 2)
        })
        .await;
        drop(probes);
        check!(
            self,
            metrics.num_alive_tasks() == 0,
            "{} tasks alive after every stage stopped",
            metrics.num_alive_tasks()
        );
        for (i, s) in self.stages.iter().enumerate() {
            let holders = Arc::strong_count(&s.probe);
            if holders != 1 {
                self.violations.push(format!(
                    "stage {i}: its state is still held ({holders} references)"
                ));
            }
        }
    }
}
