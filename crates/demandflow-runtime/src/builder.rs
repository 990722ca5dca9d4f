//! Builders that configure and start stages.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use demandflow_core::{BufferKeep, DEFAULT_BUFFER_SIZE, DemandDispatcher, Dispatcher};

use crate::behaviour::{AsConsumer, AsProducer, AsProducerConsumer};
use crate::call::{Calls, HandleCall, Request};
use crate::engine::{self, DEFAULT_STALL_REPORT, EngineOptions, StageTask};
use crate::{
    Consumer, ConsumerRef, DemandFlow, Producer, ProducerConsumer, ProducerConsumerRef,
    ProducerRef, StartError,
};

/// Configures and starts a [`Producer`]. Create one with [`producer`](crate::producer).
///
/// | option | default |
/// |---|---|
/// | `buffer_size` | 10 000 events |
/// | `buffer_keep` | [`BufferKeep::Last`] (drop the oldest on overflow) |
/// | `demand_flow` | [`DemandFlow::Forward`] |
/// | `dispatcher` | [`DemandDispatcher`] |
#[must_use = "a builder does nothing until `start` is called"]
pub struct ProducerBuilder<P: Producer, D = DemandDispatcher> {
    stage: P,
    dispatcher: D,
    options: EngineOptions,
    calls: Calls<P, P::Event>,
}

/// Starts configuring a producer stage.
pub fn producer<P: Producer>(stage: P) -> ProducerBuilder<P> {
    ProducerBuilder {
        stage,
        dispatcher: DemandDispatcher::new(),
        options: EngineOptions::new(DEFAULT_BUFFER_SIZE),
        calls: Calls::new(),
    }
}

/// Starts configuring a consumer stage.
pub fn consumer<C: Consumer>(stage: C) -> ConsumerBuilder<C> {
    ConsumerBuilder {
        stage,
        name: None,
        stall_report: Some(DEFAULT_STALL_REPORT),
        calls: Calls::new(),
    }
}

/// Starts configuring a producer-consumer stage.
pub fn producer_consumer<S: ProducerConsumer>(stage: S) -> ProducerConsumerBuilder<S> {
    ProducerConsumerBuilder {
        stage,
        dispatcher: DemandDispatcher::new(),
        options: EngineOptions::new(usize::MAX),
        calls: Calls::new(),
    }
}

/// The builder option that registers a request type, on every builder.
macro_rules! answers_option {
    ($event:ty) => {
        /// Registers `R` as a request the stage answers with its
        /// [`HandleCall<R, _>`](HandleCall) implementation, so that handles can
        /// `call` and `cast` it. Register each request type the stage answers;
        /// other request types are refused with
        /// [`CallError::Unhandled`](crate::CallError::Unhandled).
        pub fn answers<R: Request>(mut self) -> Self
        where
            S: HandleCall<R, $event>,
        {
            self.calls.register::<R>();
            self
        }
    };
}

macro_rules! producing_options {
    ($builder:ident, $event:ty) => {
        /// Names the stage (in logs, traces and stats).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.options.name = Some(name.into());
            self
        }

        /// How many events may wait for demand before the buffer drops some;
        /// `usize::MAX` for no bound. Dropped events are reported to the stage's
        /// `handle_dropped` and counted in its stats.
        pub fn buffer_size(mut self, events: usize) -> Self {
            self.options.buffer_size = events;
            self
        }

        /// Which events an overflowing buffer drops.
        pub fn buffer_keep(mut self, keep: BufferKeep) -> Self {
            self.options.buffer_keep = keep;
            self
        }

        /// Starts forwarding or accumulating demand (see [`DemandFlow`]).
        pub fn demand_flow(mut self, flow: DemandFlow) -> Self {
            self.options.flow = flow;
            self
        }

        /// How long the stage may hold events that no consumer is subscribed to
        /// take (or that wait in a partition without a consumer), or a
        /// producer-consumer may wait for events it asked of a producer that
        /// holds events or is stuck, before it logs one warning naming itself
        /// and shows the stall in its stats; `None` turns the report off.
        /// Default: 5 seconds.
        pub fn stall_report(mut self, after: Option<Duration>) -> Self {
            self.options.stall_report = after;
            self
        }

        /// Replaces the dispatcher.
        pub fn dispatcher<D2: Dispatcher<$event>>(self, dispatcher: D2) -> $builder<S, D2> {
            $builder {
                stage: self.stage,
                dispatcher,
                options: self.options,
                calls: self.calls,
            }
        }

        answers_option!($event);
    };
}

impl<S: Producer, D: Dispatcher<S::Event>> ProducerBuilder<S, D> {
    producing_options!(ProducerBuilder, S::Event);

    /// Spawns the stage on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub fn start(self) -> Result<ProducerRef<S::Event>, StartError> {
        self.start_in(None)
    }

    /// `start`, or with `fused` the stage's task is left there for a fused chain.
    pub(crate) fn start_in(
        self,
        fused: Option<&mut Vec<StageTask>>,
    ) -> Result<ProducerRef<S::Event>, StartError> {
        let started = engine::start(
            AsProducer(self.stage, self.calls),
            self.dispatcher,
            self.options,
            fused,
        )?;
        Ok(ProducerRef {
            port: started.mailbox.clone(),
            control: started.mailbox,
            guard: started.guard,
        })
    }
}

/// Configures and starts a [`ProducerConsumer`]. Create one with
/// [`producer_consumer`](crate::producer_consumer).
///
/// Options as for [`ProducerBuilder`], except that the buffer is unbounded by
/// default (as in GenStage).
#[must_use = "a builder does nothing until `start` is called"]
pub struct ProducerConsumerBuilder<S: ProducerConsumer, D = DemandDispatcher> {
    stage: S,
    dispatcher: D,
    options: EngineOptions,
    calls: Calls<S, S::Out>,
}

impl<S: ProducerConsumer, D: Dispatcher<S::Out>> ProducerConsumerBuilder<S, D> {
    producing_options!(ProducerConsumerBuilder, S::Out);

    /// Spawns the stage on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub fn start(self) -> Result<ProducerConsumerRef<S::In, S::Out>, StartError> {
        self.start_in(None)
    }

    /// `start`, or with `fused` the stage's task is left there for a fused chain.
    pub(crate) fn start_in(
        self,
        fused: Option<&mut Vec<StageTask>>,
    ) -> Result<ProducerConsumerRef<S::In, S::Out>, StartError> {
        let started = engine::start(
            AsProducerConsumer(self.stage, self.calls),
            self.dispatcher,
            self.options,
            fused,
        )?;
        Ok(ProducerConsumerRef {
            port: started.mailbox.clone(),
            subscriber: started.mailbox.clone(),
            control: started.mailbox,
            guard: started.guard,
        })
    }
}

/// Configures and starts a [`Consumer`]. Create one with [`consumer`](crate::consumer).
#[must_use = "a builder does nothing until `start` is called"]
pub struct ConsumerBuilder<S> {
    stage: S,
    name: Option<String>,
    stall_report: Option<Duration>,
    calls: Calls<S, Infallible>,
}

impl<S: Consumer> ConsumerBuilder<S> {
    answers_option!(Infallible);

    /// Names the stage (in logs, traces and stats).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long the consumer may go without being subscribed to any producer,
    /// or wait for events it asked of a producer that holds events or is
    /// stuck, before it logs one warning naming itself and shows the stall in
    /// its stats; `None` turns the report off. Default: 5 seconds.
    pub fn stall_report(mut self, after: Option<Duration>) -> Self {
        self.stall_report = after;
        self
    }

    /// Spawns the stage on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub fn start(self) -> Result<ConsumerRef<S::Event>, StartError> {
        self.start_in(None)
    }

    /// `start`, or with `fused` the stage's task is left there for a fused chain.
    pub(crate) fn start_in(
        self,
        fused: Option<&mut Vec<StageTask>>,
    ) -> Result<ConsumerRef<S::Event>, StartError> {
        let options = EngineOptions {
            name: self.name,
            stall_report: self.stall_report,
            ..EngineOptions::new(0)
        };
        let started = engine::start::<_, NoDispatcher>(
            AsConsumer(self.stage, self.calls),
            NoDispatcher,
            options,
            fused,
        )?;
        let subscriber: Arc<dyn crate::port::SubscriberPort<S::Event>> = started.mailbox.clone();
        Ok(ConsumerRef {
            subscriber,
            control: started.mailbox,
            guard: started.guard,
        })
    }
}

/// The dispatcher slot of a consumer, which never has subscribers.
pub(crate) struct NoDispatcher;

impl Dispatcher<Infallible> for NoDispatcher {
    fn subscribe(
        &mut self,
        _: demandflow_core::SubscriptionId,
        _: demandflow_core::StageId,
        _: &demandflow_core::SubscribeOptions<Infallible>,
    ) -> Result<u64, demandflow_core::SubscribeRefused> {
        Err(demandflow_core::SubscribeRefused::Other(
            "a consumer cannot be subscribed to".into(),
        ))
    }
    fn cancel(&mut self, _: demandflow_core::SubscriptionId) -> u64 {
        0
    }
    fn ask(
        &mut self,
        _: demandflow_core::SubscriptionId,
        _: u64,
        _: &mut dyn demandflow_core::Deliver<Infallible>,
    ) -> u64 {
        0
    }
    fn dispatch(
        &mut self,
        events: Vec<Infallible>,
        _: &mut dyn demandflow_core::Deliver<Infallible>,
    ) -> demandflow_core::Dispatched<Infallible> {
        demandflow_core::Dispatched::leftover(events)
    }
}
