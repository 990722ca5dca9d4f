//! The behaviours of the demo: armor, fireproofing, flammability, durability.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use ecs_world::{Behaviour, Event, EventName, Handled, ObjectId};

/// What an attack carries; behaviours may change it for the ones after them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Attack {
    pub(crate) damage: u32,
    pub(crate) element: Element,
}

/// The kind of an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Element {
    Physical,
    Fire,
}

/// Lines the behaviours write, read by `main` once the world is idle.
#[derive(Default)]
pub(crate) struct Lines {
    lines: Mutex<Vec<String>>,
    quiet: AtomicBool,
}

/// The log the behaviours share.
pub(crate) type Log = Arc<Lines>;

impl Lines {
    /// Adds the line `line` makes, unless the log is quiet.
    pub(crate) fn say(&self, line: impl FnOnce() -> String) {
        if !self.quiet.load(Ordering::Relaxed) {
            self.lines.lock().push(line());
        }
    }

    /// Stops (or resumes) recording.
    pub(crate) fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }

    /// The lines so far, removed from the log.
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock())
    }
}

/// Takes its rating off the damage of physical attacks.
pub(crate) struct Armor {
    pub(crate) attack: EventName,
    pub(crate) log: Log,
}

impl Behaviour<Attack> for Armor {
    type State = u32;

    fn name(&self) -> &str {
        "armor"
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.attack]
    }

    fn handle(&self, object: ObjectId, rating: &mut u32, event: &mut Event<Attack>) -> Handled {
        if event.args.element == Element::Physical {
            let absorbed = event.args.damage.min(*rating);
            event.args.damage -= absorbed;
            self.log.say(|| {
                format!(
                    "  object {}: armor absorbs {absorbed}, {} gets through",
                    object.0, event.args.damage
                )
            });
        }
        Handled::Continue
    }
}

/// Stops fire attacks: later behaviours never see them.
pub(crate) struct Fireproof {
    pub(crate) attack: EventName,
    pub(crate) log: Log,
}

impl Behaviour<Attack> for Fireproof {
    type State = ();

    fn name(&self) -> &str {
        "fireproof"
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.attack]
    }

    fn handle(&self, object: ObjectId, _: &mut (), event: &mut Event<Attack>) -> Handled {
        if event.args.element == Element::Fire {
            self.log
                .say(|| format!("  object {}: fireproof, the fire is stopped", object.0));
            return Handled::Halt;
        }
        Handled::Continue
    }
}

/// Catches fire when a fire attack gets through.
pub(crate) struct Flammable {
    pub(crate) attack: EventName,
    pub(crate) log: Log,
}

impl Behaviour<Attack> for Flammable {
    /// Burning or not.
    type State = bool;

    fn name(&self) -> &str {
        "flammable"
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.attack]
    }

    fn handle(&self, object: ObjectId, burning: &mut bool, event: &mut Event<Attack>) -> Handled {
        if event.args.element == Element::Fire && !*burning {
            *burning = true;
            self.log
                .say(|| format!("  object {}: catches fire", object.0));
        }
        Handled::Continue
    }
}

/// Loses durability to the damage that reaches it; destroyed at 0.
pub(crate) struct Durability {
    pub(crate) attack: EventName,
    pub(crate) log: Log,
}

impl Behaviour<Attack> for Durability {
    type State = u32;

    fn name(&self) -> &str {
        "durability"
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.attack]
    }

    fn handle(&self, object: ObjectId, durability: &mut u32, event: &mut Event<Attack>) -> Handled {
        *durability = durability.saturating_sub(event.args.damage);
        self.log.say(|| {
            let destroyed = if *durability == 0 { " (destroyed)" } else { "" };
            format!(
                "  object {}: durability -{} -> {}{destroyed}",
                object.0, event.args.damage, durability
            )
        });
        Handled::Continue
    }
}
