//! Info messages: any value sent to a stage besides events (a timer firing, a
//! command from the application, a result from another task), for its
//! `handle_info` callback to downcast to the types it expects.

use std::any::Any;
use std::fmt;

/// A message for a stage's `handle_info` callback.
///
/// Info messages are how a stage hears from the outside world besides events: a
/// timer firing, a command from the application, a value pushed by another task.
/// They carry any `Send` value; the stage downcasts to the types it expects.
///
/// To send a stage a value of a type it knows, or to ask it something and get a
/// reply, prefer a typed request ([`Request`](crate::Request),
/// [`HandleCall`](crate::HandleCall), a handle's `call` and `cast`): ordered the
/// same way, with nothing to downcast.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::Info;
///
/// let info = Info::new(42_u32);
/// assert!(info.is::<u32>());
/// assert_eq!(info.downcast::<u32>().ok(), Some(42));
///
/// let info = Info::new("tick");
/// let info = info.downcast::<u32>().unwrap_err(); // not a u32: handed back
/// assert_eq!(info.downcast_ref::<&str>(), Some(&"tick"));
/// ```
pub struct Info(Box<dyn Any + Send>);

impl Info {
    /// Wraps `value`.
    pub fn new<T: Any + Send>(value: T) -> Self {
        Info(Box::new(value))
    }

    /// `true` when the message holds a `T`.
    pub fn is<T: Any>(&self) -> bool {
        self.0.is::<T>()
    }

    /// The value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// Takes the value out if it is a `T`.
    ///
    /// # Errors
    ///
    /// Hands the message back unchanged when it holds another type.
    pub fn downcast<T: Any>(self) -> Result<T, Info> {
        self.0.downcast::<T>().map(|b| *b).map_err(Info)
    }
}

impl fmt::Debug for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Info(..)")
    }
}
