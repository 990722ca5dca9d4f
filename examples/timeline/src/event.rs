//! One reported step: its fields, how a request body becomes one (or a list
//! of them, for the bulk endpoint), and the random events of the load route.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The six steps a message goes through in the reference system; the load
/// route draws from them. Ingest accepts any step name (see [`MAX_STEP_BYTES`]).
pub const STEPS: [&str; 6] = [
    "MESSAGE_CREATED",
    "MESSAGE_REACHED_BACKEND",
    "MESSAGE_IN_SEARCH_QUEUE",
    "MESSAGE_IN_UPDATES_QUEUE",
    "MESSAGE_IN_WS_QUEUE",
    "MESSAGE_REACHED_FRONTEND",
];

/// The longest step name accepted, in bytes. A step name is ASCII letters,
/// digits and `_`, so it is safe as a JSON key and in a page.
pub const MAX_STEP_BYTES: usize = 64;

/// A message reached a step: what the pipeline carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The application the message belongs to.
    pub app_id: i64,
    /// The message.
    pub message_id: i64,
    /// The step it reached, e.g. `MESSAGE_CREATED`.
    pub event: Box<str>,
    /// When, as RFC 3339 in UTC (the server's clock when the client gave none).
    pub created_at: Box<str>,
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> Box<str> {
    format_time(OffsetDateTime::now_utc())
}

fn format_time(at: OffsetDateTime) -> Box<str> {
    let at = at.to_offset(time::UtcOffset::UTC);
    // Milliseconds are enough to order steps and keep stored objects short.
    let at = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
        .into_boxed_str()
}

/// Milliseconds since the Unix epoch, now (the stored rows' inserted and
/// updated times).
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Checks a step name: 1 to [`MAX_STEP_BYTES`] ASCII letters, digits or `_`.
///
/// # Errors
///
/// What is wrong with it.
pub fn check_step(step: &str) -> Result<(), String> {
    if step.is_empty() {
        Err("must not be empty".to_owned())
    } else if step.len() > MAX_STEP_BYTES {
        Err(format!("longer than {MAX_STEP_BYTES} bytes"))
    } else if !step.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Err("must be ASCII letters, digits or _".to_owned())
    } else {
        Ok(())
    }
}

/// Parses `created_at`: empty means now, anything else must be RFC 3339
/// (any offset; stored in UTC).
///
/// # Errors
///
/// What is wrong with it.
pub fn parse_created_at(text: &str) -> Result<Box<str>, String> {
    if text.is_empty() {
        return Ok(now_rfc3339());
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map(format_time)
        .map_err(|error| format!("not an RFC 3339 time ({error})"))
}

fn id_field(object: &Map<String, Value>, name: &str, at: &str, errors: &mut Vec<String>) -> i64 {
    match object.get(name) {
        None => errors.push(format!("{at}{name}: missing")),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(id) if id >= 0 => return id,
            _ => errors.push(format!("{at}{name}: must be a non-negative 64-bit integer")),
        },
        Some(_) => errors.push(format!("{at}{name}: must be an integer")),
    }
    0
}

/// Validates one event object; `at` prefixes each error (`"events[3]."` in a
/// bulk body). Errors go to `errors`, one per problem found.
pub(crate) fn event_from_json(value: &Value, at: &str, errors: &mut Vec<String>) -> Option<Event> {
    let Value::Object(object) = value else {
        errors.push(format!("{}: must be a JSON object", at_name(at)));
        return None;
    };
    let before = errors.len();
    let app_id = id_field(object, "app_id", at, errors);
    let message_id = id_field(object, "message_id", at, errors);
    let event = match object.get("event") {
        None => {
            errors.push(format!("{at}event: missing"));
            None
        }
        Some(Value::String(step)) => match check_step(step) {
            Ok(()) => Some(step.as_str()),
            Err(why) => {
                errors.push(format!("{at}event: {why}"));
                None
            }
        },
        Some(_) => {
            errors.push(format!("{at}event: must be a string"));
            None
        }
    };
    let created_at = match object.get("created_at") {
        None | Some(Value::Null) => Some(now_rfc3339()),
        Some(Value::String(text)) => match parse_created_at(text) {
            Ok(at) => Some(at),
            Err(why) => {
                errors.push(format!("{at}created_at: {why}"));
                None
            }
        },
        Some(_) => {
            errors.push(format!("{at}created_at: must be an RFC 3339 string"));
            None
        }
    };
    match (event, created_at) {
        (Some(event), Some(created_at)) if errors.len() == before => Some(Event {
            app_id,
            message_id,
            event: event.into(),
            created_at,
        }),
        _ => None,
    }
}

fn at_name(at: &str) -> &str {
    match at.strip_suffix('.') {
        Some("") | None => "body",
        Some(name) => name,
    }
}

fn json_body(body: &[u8]) -> Result<Value, Vec<String>> {
    serde_json::from_slice(body).map_err(|error| vec![format!("body: malformed JSON ({error})")])
}

/// Parses the body of `POST /api/event`: `{"app_id", "message_id", "event",
/// "created_at"}`, `created_at` optional.
///
/// # Errors
///
/// One message per problem found.
pub fn parse_event(body: &[u8]) -> Result<Event, Vec<String>> {
    let value = json_body(body)?;
    let mut errors = Vec::new();
    event_from_json(&value, "", &mut errors).ok_or(errors)
}

/// Parses the body of `POST /api/event/bulk`: `{"events": [event, …]}`. All
/// or nothing: one bad event refuses the whole body.
///
/// # Errors
///
/// One message per problem found, each naming the event's index.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<Event>, Vec<String>> {
    let value = json_body(body)?;
    let events = match value {
        Value::Object(mut object) => match object.remove("events") {
            Some(Value::Array(events)) => events,
            Some(_) => return Err(vec!["events: must be an array".to_owned()]),
            None => return Err(vec!["events: missing".to_owned()]),
        },
        _ => return Err(vec!["body: must be a JSON object".to_owned()]),
    };
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if let Some(event) = event_from_json(event, &format!("events[{i}]."), &mut errors) {
            parsed.push(event);
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// A random event as the reference's load route makes them: an id in
/// 1..=10,000,000, `message_id` = id × 100, app 1..=100, one of the
/// [`STEPS`], now.
pub fn random_event() -> Event {
    use rand::Rng;
    let mut rng = rand::rng();
    let id: i64 = rng.random_range(1..=10_000_000);
    Event {
        app_id: rng.random_range(1..=100),
        message_id: id * 100,
        event: STEPS[rng.random_range(0..STEPS.len())].into(),
        created_at: now_rfc3339(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_event_parses_and_its_time_is_stored_in_utc() {
        let event = parse_event(
            br#"{"app_id":1,"message_id":200,"event":"MESSAGE_CREATED","created_at":"2026-12-03T16:00:00.5+02:00"}"#,
        )
        .unwrap();
        assert_eq!(
            event,
            Event {
                app_id: 1,
                message_id: 200,
                event: "MESSAGE_CREATED".into(),
                created_at: "2026-12-03T14:00:00.5Z".into(),
            }
        );
    }

    #[test]
    fn every_problem_is_reported_once() {
        let errors = parse_event(br#"{"app_id":"1","event":"bad step!","created_at":"yesterday"}"#)
            .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("app_id: must be an integer"));
        assert!(errors[1].starts_with("message_id: missing"));
        assert!(errors[2].starts_with("event: must be ASCII"));
        assert!(errors[3].starts_with("created_at: not an RFC 3339 time"));
    }

    #[test]
    fn a_bulk_body_with_one_bad_event_is_refused_naming_its_index() {
        let errors = parse_bulk(
            br#"{"events":[{"app_id":1,"message_id":2,"event":"A"},{"app_id":1,"event":"A"}]}"#,
        )
        .unwrap_err();
        assert_eq!(errors, ["events[1].message_id: missing"]);
        assert_eq!(
            parse_bulk(br#"{"events":[1]}"#).unwrap_err(),
            ["events[0]: must be a JSON object"]
        );
    }

    #[test]
    fn random_events_follow_the_reference_shape() {
        for _ in 0..100 {
            let event = random_event();
            assert_eq!(event.message_id % 100, 0);
            assert!((100..=1_000_000_000).contains(&event.message_id));
            assert!(STEPS.contains(&&*event.event));
        }
    }
}
