//! Every public type that crosses tasks is `Send` (and `Sync` where shared).

use demandflow::dispatcher::DemandDispatcher;
use demandflow::*;

fn send<T: Send>() {}
fn sync<T: Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    send::<ProducerRef<u64>>();
    sync::<ProducerRef<u64>>();
    send::<ConsumerRef<u64>>();
    sync::<ConsumerRef<u64>>();
    send::<ProducerConsumerRef<u64, String>>();
    sync::<ProducerConsumerRef<u64, String>>();
    send::<StageMonitor>();
    sync::<StageMonitor>();
    send::<InfoSender>();
    sync::<InfoSender>();
    send::<Pusher<u64>>();
    sync::<Pusher<u64>>();
    send::<EventStream<u64>>();
}

#[test]
fn values_are_send_and_sync() {
    send::<Reason>();
    sync::<Reason>();
    send::<CancelReason>();
    sync::<CancelReason>();
    send::<SubscribeOptions<u64>>();
    sync::<SubscribeOptions<u64>>();
    send::<StageStats>();
    sync::<StageStats>();
    send::<Info>();
    send::<SubscribeError>();
    sync::<SubscribeError>();
    send::<StartError>();
    sync::<StartError>();
    send::<CallError>();
    sync::<CallError>();
    send::<SendError<u64>>();
    send::<TrySendError<u64>>();
    send::<Context<u64>>();
}

#[test]
fn sources_and_dispatchers_are_send() {
    send::<IterSource<std::ops::Range<u64>>>();
    send::<PushSource<u64>>();
    send::<DemandDispatcher>();
}

#[test]
fn call_futures_are_send() {
    struct Question;
    impl Request for Question {
        type Reply = u64;
    }
    fn send_value<T: Send>(_: T) {}
    // Checked by the compiler; the stages need not run.
    #[expect(dead_code, reason = "only type-checked")]
    fn check(p: &ProducerRef<u64>, c: &ConsumerRef<u64>, s: &StageHandle) {
        let timeout = std::time::Duration::from_secs(1);
        send_value(p.call(Question, timeout));
        send_value(c.call(Question, timeout));
        send_value(s.call(Question, timeout));
    }
}
