//! Every public type of the crate is `Send` and `Sync` (asserted once, here).

use demandflow_redis::{
    BuildSourceError, ConnectSinkError, FailurePolicy, RedisSink, RedisSource, RedisSourceBuilder,
    SourceMetrics, StartFrom, StreamEntry, StreamProducer,
};

fn send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<RedisSource<u64>>();
    send_sync::<RedisSourceBuilder<u64>>();
    send_sync::<StreamProducer<u64>>();
    send_sync::<RedisSink>();
    send_sync::<StreamEntry>();
    send_sync::<FailurePolicy>();
    send_sync::<SourceMetrics>();
    send_sync::<StartFrom>();
    send_sync::<BuildSourceError>();
    send_sync::<ConnectSinkError>();
}
