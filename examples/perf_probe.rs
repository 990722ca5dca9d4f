use demandflow::*;
use std::time::Instant;
struct C(u64);
impl Producer for C {
    type Event = u64;
    async fn handle_demand(&mut self, d: u64, ctx: &mut Context<u64>) {
        ctx.emit_all(self.0..self.0 + d);
        self.0 += d;
    }
}
struct S(u64, u64, Option<tokio::sync::oneshot::Sender<()>>);
impl Consumer for S {
    type Event = u64;
    async fn handle_events(&mut self, e: Vec<u64>, _: SubscriptionId, _: &mut ConsumerContext) {
        self.0 += e.len() as u64;
        if self.0 >= self.1 {
            if let Some(t) = self.2.take() {
                let _ = t.send(());
            }
        }
    }
}
struct Id;
impl ProducerConsumer for Id {
    type In = u64;
    type Out = u64;
    async fn handle_events(&mut self, e: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        ctx.emit_vec(e);
    }
}
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        for md in [1u64, 10, 100, 1000, 10000] {
            for pc in [false, true] {
                let n = (md * 20_000).min(20_000_000).max(200_000);
                let p = producer(C(0)).start().unwrap();
                let (tx, rx) = tokio::sync::oneshot::channel();
                let c = consumer(S(0, n, Some(tx))).start().unwrap();
                let t = Instant::now();
                let _pc;
                if pc {
                    let x = producer_consumer(Id).start().unwrap();
                    x.subscribe_to(&p, SubscribeOptions::new().max_demand(md))
                        .await
                        .unwrap();
                    c.subscribe_to(&x, SubscribeOptions::new().max_demand(md))
                        .await
                        .unwrap();
                    _pc = Some(x);
                } else {
                    c.subscribe_to(&p, SubscribeOptions::new().max_demand(md))
                        .await
                        .unwrap();
                }
                rx.await.unwrap();
                let el = t.elapsed();
                println!(
                    "pc={pc} md={md} {:.2} M ev/s",
                    n as f64 / el.as_secs_f64() / 1e6
                );
            }
        }
    });
}
