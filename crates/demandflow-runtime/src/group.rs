//! Pipeline liveness: a connected pipeline is *detached* when no handle to any
//! of its stages is left.
//!
//! Every stage belongs to a group; subscribing merges the consumer's group into
//! the producer's. A group counts the stages that still have at least one user
//! handle. When that count drops to zero every member is told it is detached:
//! from then on each stops by itself once it can do no more work (the engine's
//! `lifetime` module), so dropping all handles to a pipeline neither loses its
//! events nor leaks its tasks. Internal references (peers, info senders) do not
//! count.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::port::{Control, ControlPort};

/// All group bookkeeping happens under this one lock: it is taken only when
/// handles are created or dropped and when stages subscribe, never per event.
static LOCK: Mutex<()> = Mutex::new(());

struct Group {
    state: Mutex<GroupState>,
}

struct GroupState {
    handled: usize,
    members: Vec<Member>,
}

/// A stage in a group. The node goes away with the stage's last handle, but the
/// stage stays a member until the group shuts down.
struct Member {
    node: Weak<Node>,
    control: Weak<dyn ControlPort>,
}

/// One stage's membership.
pub(crate) struct Node {
    group: Mutex<Arc<Group>>,
}

impl Node {
    pub(crate) fn new(control: &Arc<dyn ControlPort>) -> Arc<Node> {
        Arc::new_cyclic(|me| Node {
            group: Mutex::new(Arc::new(Group {
                state: Mutex::new(GroupState {
                    handled: 0,
                    members: vec![Member {
                        node: me.clone(),
                        control: Arc::downgrade(control),
                    }],
                }),
            })),
        })
    }
}

/// Held (through an `Arc`) by every user handle of one stage; the stage counts as
/// handled while any exists.
pub(crate) struct HandleGuard {
    node: Arc<Node>,
}

impl HandleGuard {
    pub(crate) fn new(node: Arc<Node>) -> Arc<HandleGuard> {
        let _lock = LOCK.lock();
        node.group.lock().state.lock().handled += 1;
        Arc::new(HandleGuard { node })
    }

    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        let members = {
            let _lock = LOCK.lock();
            let group = self.node.group.lock().clone();
            let mut state = group.state.lock();
            state.handled -= 1;
            if state.handled > 0 {
                return;
            }
            std::mem::take(&mut state.members)
        };
        for control in members.iter().filter_map(|m| m.control.upgrade()) {
            let _ = control.control(Control::Detach);
        }
    }
}

/// Joins the groups of two stages (a consumer subscribing to a producer).
pub(crate) fn join(a: &Arc<Node>, b: &Arc<Node>) {
    let _lock = LOCK.lock();
    let ga = a.group.lock().clone();
    let gb = b.group.lock().clone();
    if Arc::ptr_eq(&ga, &gb) {
        return;
    }
    let moved = {
        let mut sb = gb.state.lock();
        let mut sa = ga.state.lock();
        sa.handled += sb.handled;
        sb.handled = 0;
        let moved = std::mem::take(&mut sb.members);
        let nodes: Vec<Arc<Node>> = moved.iter().filter_map(|m| m.node.upgrade()).collect();
        sa.members.retain(|m| m.control.strong_count() > 0);
        sa.members.extend(moved);
        nodes
    };
    for node in moved {
        *node.group.lock() = ga.clone();
    }
}
