//! One handle type over the three fixture stages, so a program can act on
//! any stage by number.

use super::*;

/// A handle to any of the three fixture stages.
pub(crate) enum Handle {
    Source(ProducerRef<Ev>),
    Relay(ProducerConsumerRef<Ev, Ev>),
    Sink(ConsumerRef<Ev>),
}

impl Handle {
    pub(crate) fn producer(&self) -> Option<ProducerRef<Ev>> {
        match self {
            Handle::Source(h) => Some(h.as_producer()),
            Handle::Relay(h) => Some(h.as_producer()),
            Handle::Sink(_) => None,
        }
    }

    pub(crate) async fn stats(&self) -> Result<StageStats, NotRunning> {
        each!(self, h => h.stats().await)
    }

    pub(crate) fn send(&self, cmd: Cmd) -> Result<(), NotRunning> {
        each!(self, h => h.send_info(cmd))
    }

    pub(crate) async fn stop(&self, reason: Reason) -> Result<(), NotRunning> {
        each!(self, h => h.stop(reason).await)
    }

    pub(crate) fn monitor(&self) -> StageMonitor {
        each!(self, h => h.monitor())
    }

    pub(crate) async fn subscribe(
        &self,
        to: &ProducerRef<Ev>,
        options: SubscribeOptions<Ev>,
        wait: bool,
    ) -> Result<SubscriptionId, SubscribeError> {
        match (self, wait) {
            (Handle::Relay(h), true) => h.subscribe_to(to, options).await,
            (Handle::Relay(h), false) => h.subscribe_to_nowait(to, options),
            (Handle::Sink(h), true) => h.subscribe_to(to, options).await,
            (Handle::Sink(h), false) => h.subscribe_to_nowait(to, options),
            (Handle::Source(_), _) => unreachable!("a producer does not subscribe"),
        }
    }

    pub(crate) async fn resubscribe(
        &self,
        old: SubscriptionId,
        reason: Reason,
        to: &ProducerRef<Ev>,
        options: SubscribeOptions<Ev>,
    ) -> Result<SubscriptionId, SubscribeError> {
        match self {
            Handle::Relay(h) => h.resubscribe(old, reason, to, options).await,
            Handle::Sink(h) => h.resubscribe(old, reason, to, options).await,
            Handle::Source(_) => unreachable!("a producer does not subscribe"),
        }
    }

    pub(crate) fn set_demand_flow(&self, flow: DemandFlow) -> Result<(), NotRunning> {
        match self {
            Handle::Source(h) => h.set_demand_flow(flow),
            Handle::Relay(h) => h.set_demand_flow(flow),
            Handle::Sink(_) => Ok(()),
        }
    }

    pub(crate) fn cancel(&self, sub: SubscriptionId, reason: Reason) -> Result<(), NotRunning> {
        match self {
            Handle::Relay(h) => h.cancel(sub, reason),
            Handle::Sink(h) => h.cancel(sub, reason),
            Handle::Source(_) => unreachable!("a producer handle cannot cancel"),
        }
    }

    pub(crate) fn ask(&self, sub: SubscriptionId, demand: u64) -> Result<(), NotRunning> {
        match self {
            Handle::Relay(h) => h.ask(sub, demand),
            Handle::Sink(h) => h.ask(sub, demand),
            Handle::Source(_) => unreachable!("a producer handle cannot ask"),
        }
    }
}
