//! Stream entries, and reading them out of the replies of XREADGROUP and XAUTOCLAIM.

use redis::Value;

/// One entry of a Redis stream: its id (`"1700000000000-0"`) and its fields in
/// the order they were written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry's id.
    pub id: String,
    /// The entry's field names and values.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamEntry {
    /// The value of the first field named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_slice())
    }

    /// The value of the first field named `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first field named `name`, parsed as a `T`; the error names the field
    /// and says what was wrong, ready to be a decoder's failure reason.
    ///
    /// ```
    /// use demandflow_redis::StreamEntry;
    ///
    /// let entry = StreamEntry {
    ///     id: "1-0".into(),
    ///     fields: vec![("n".into(), b"42".to_vec()), ("s".into(), b"x".to_vec())],
    /// };
    /// assert_eq!(entry.parse::<u64>("n"), Ok(42));
    /// assert_eq!(entry.parse::<u64>("m"), Err("no UTF-8 field m".to_string()));
    /// assert!(entry.parse::<u64>("s").unwrap_err().starts_with("field s: "));
    /// ```
    pub fn parse<T>(&self, name: &str) -> Result<T, String>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let value = self
            .get_str(name)
            .ok_or_else(|| format!("no UTF-8 field {name}"))?;
        value.parse().map_err(|e| format!("field {name}: {e}"))
    }
}

fn into_string(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// One entry `[id, [field, value, …]]`. An entry whose fields are nil (deleted
/// while pending, Redis 6) has no fields.
fn entry(value: Value) -> Option<StreamEntry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id = into_string(parts.next()?)?;
    let fields = match parts.next() {
        Some(Value::Array(flat)) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                fields.push((into_string(name)?, into_bytes(value)?));
            }
            fields
        }
        Some(Value::Map(pairs)) => pairs
            .into_iter()
            .map(|(name, value)| Some((into_string(name)?, into_bytes(value)?)))
            .collect::<Option<_>>()?,
        _ => Vec::new(),
    };
    Some(StreamEntry { id, fields })
}

/// Appends the entries of a list of entries to `out`.
fn entries(value: Value, out: &mut Vec<StreamEntry>) {
    if let Value::Array(list) = value {
        out.reserve(list.len());
        out.extend(list.into_iter().filter_map(entry));
    }
}

/// The entries of an XREADGROUP reply for one stream (nil when the block
/// timed out). Accepts RESP2 (`[[key, entries]]`) and RESP3 (`{key: entries}`).
pub(crate) fn read_reply(value: Value, out: &mut Vec<StreamEntry>) {
    match value {
        Value::Array(streams) => {
            for stream in streams {
                if let Value::Array(pair) = stream {
                    if let Some(list) = pair.into_iter().nth(1) {
                        entries(list, out);
                    }
                }
            }
        }
        Value::Map(streams) => {
            for (_, list) in streams {
                entries(list, out);
            }
        }
        _ => {}
    }
}

/// The entries of an XRANGE reply (a list of entries).
pub(crate) fn read_range(value: Value, out: &mut Vec<StreamEntry>) {
    entries(value, out);
}

/// The next cursor and the entries of an XAUTOCLAIM reply
/// (`[cursor, entries, deleted ids]`).
pub(crate) fn autoclaim_reply(value: Value, out: &mut Vec<StreamEntry>) -> Option<String> {
    let Value::Array(parts) = value else {
        return None;
    };
    let mut parts = parts.into_iter();
    let cursor = into_string(parts.next()?)?;
    if let Some(list) = parts.next() {
        entries(list, out);
    }
    // Entries with no fields were deleted from the stream while pending; the
    // claim has already removed them from the pending list (Redis 7).
    out.retain(|e| !e.fields.is_empty());
    Some(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn read_reply_gives_entries_in_order_with_their_fields() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("orders"),
            Value::Array(vec![
                raw_entry("1-0", &[("n", "1")]),
                raw_entry("1-1", &[("n", "2"), ("x", "y")]),
            ]),
        ])]);
        let mut out = Vec::new();
        read_reply(reply, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "1-0");
        assert_eq!(out[1].get_str("x"), Some("y"));
        assert_eq!(out[1].get("n"), Some(&b"2"[..]));
        assert_eq!(out[1].get("missing"), None);
    }

    #[test]
    fn a_timed_out_read_gives_nothing() {
        let mut out = Vec::new();
        read_reply(Value::Nil, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn autoclaim_reply_gives_the_cursor_and_skips_deleted_entries() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![
                raw_entry("2-0", &[("n", "1")]),
                Value::Array(vec![bulk("3-0"), Value::Nil]),
            ]),
            Value::Array(vec![]),
        ]);
        let mut out = Vec::new();
        assert_eq!(autoclaim_reply(reply, &mut out).as_deref(), Some("5-0"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, "2-0");
    }
}
