//! Every public type of the messages layer is `Send` and `Sync` where it should be.

use demandflow_messages::*;

fn send<T: Send>() {}
fn sync<T: Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    send::<Message<u64>>();
    sync::<Message<u64>>();
    send::<AckRef>();
    sync::<AckRef>();
    send::<Ack>();
    sync::<Ack>();
    send::<ChannelAcknowledger>();
    sync::<ChannelAcknowledger>();
    send::<NoopAcknowledger>();
    sync::<NoopAcknowledger>();
    send::<BatchInfo>();
    sync::<BatchInfo>();
    send::<BatchSize<u64>>();
    sync::<BatchSize<u64>>();
    send::<Batcher<u64>>();
    sync::<Batcher<u64>>();
    send::<Processors<u64>>();
    sync::<Processors<u64>>();
    send::<Topology<u64>>();
    sync::<Topology<u64>>();
    send::<TopologyDrain>();
    sync::<TopologyDrain>();
    send::<RateLimiter>();
    sync::<RateLimiter>();
    send::<TestAcks>();
    sync::<TestAcks>();
    send::<DummySource<u64>>();
    sync::<DummySource<u64>>();
    send::<StartTopologyError>();
    sync::<StartTopologyError>();
    send::<MetricsSnapshot>();
    sync::<MetricsSnapshot>();
}
