//! The `RESULT` line every bench ends with, written (and read back) with `serde_json`.
//!
//! Figures are rounded before they are written, and a whole number is written without a
//! fraction (`1500000`, not `1500000.0`), so the lines read as they always have; a figure that
//! is not finite is written as `null`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `x` rounded to `decimals` decimal places, as a JSON number: without a fraction when the
/// rounded value is whole, `null` when `x` is not finite.
///
/// # Examples
///
/// ```
/// use demandflow_benches::rounded;
///
/// assert_eq!(rounded(1_500_000.04, 1).to_string(), "1500000");
/// assert_eq!(rounded(123_456.789, 1).to_string(), "123456.8");
/// assert_eq!(rounded(2.0 / 3.0, 3).to_string(), "0.667");
/// assert_eq!(rounded(f64::NAN, 1).to_string(), "null");
/// ```
pub fn rounded(x: f64, decimals: i32) -> Value {
    let scale = 10f64.powi(decimals);
    let x = (x * scale).round() / scale;
    // Below 2^53 every whole f64 is exactly an integer; above, keep the float's own digits.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if x.is_finite() && x.fract() == 0.0 && x.abs() < EXACT {
        Value::from(x as i64)
    } else {
        // `From<f64>` gives `null` for what is not finite.
        Value::from(x)
    }
}

/// `RESULT ` and `value` as compact JSON, on one line.
///
/// # Examples
///
/// ```
/// use demandflow_benches::result_line;
/// use serde_json::json;
///
/// let line = result_line(&json!({"bench": "x", "rows": []}));
/// assert_eq!(line, r#"RESULT {"bench":"x","rows":[]}"#);
/// ```
pub fn result_line(value: &impl Serialize) -> String {
    // Serializing plain data into a string cannot fail (keys are strings, no I/O).
    let json = serde_json::to_string(value).expect("a RESULT value serializes");
    format!("RESULT {json}")
}

/// The JSON text of the last `RESULT ` line of `output` (a saved run, or only its last line),
/// or `output` itself, trimmed, when it has no such line (a bare JSON object).
pub fn last_result(output: &str) -> &str {
    output
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("RESULT "))
        .unwrap_or(output)
        .trim()
}

/// `serialize_with` for a rate: rounded to 0.1 event/s (see [`rounded`]).
pub(crate) fn serialize_rate<S: Serializer>(rate: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    rounded(*rate, 1).serialize(serializer)
}

/// `deserialize_with` for a rate: a number, or `null` (written for a figure that was not
/// finite) read back as NaN.
pub(crate) fn deserialize_rate<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_numbers_have_no_fraction_and_others_keep_their_digits() {
        assert_eq!(rounded(1.0, 1).to_string(), "1");
        assert_eq!(rounded(10_000.0, 3).to_string(), "10000");
        assert_eq!(rounded(4e8, 1).to_string(), "400000000");
        assert_eq!(rounded(123_456_789.5, 1).to_string(), "123456789.5");
        assert_eq!(rounded(-2.54, 1).to_string(), "-2.5");
        assert_eq!(rounded(0.0004, 3).to_string(), "0");
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(rounded(x, 1), Value::Null);
        }
        // Beyond 2^53 the float is written as serde_json writes floats, still a number.
        assert!(rounded(1e21, 1).is_number());
    }

    #[test]
    fn strings_are_escaped_and_keys_keep_their_order() {
        let value = json!({"z": "a\"b\\c\nd\u{1}->é", "a": [1, null]});
        assert_eq!(
            result_line(&value),
            r#"RESULT {"z":"a\"b\\c\nd\u0001->é","a":[1,null]}"#
        );
    }

    #[test]
    fn the_last_result_line_wins_and_a_bare_object_is_itself() {
        let output = "table\nRESULT {\"a\":1}\nmore\n  RESULT {\"a\":2}  \n";
        assert_eq!(last_result(output), "{\"a\":2}");
        assert_eq!(last_result(" {\"b\":3}\n"), "{\"b\":3}");
        assert_eq!(last_result("nothing"), "nothing");
    }

    #[test]
    fn a_null_rate_reads_back_as_nan() {
        #[derive(Deserialize)]
        struct Row {
            #[serde(deserialize_with = "deserialize_rate")]
            rate: f64,
        }
        let row: Row = serde_json::from_str(r#"{"rate":null}"#).unwrap();
        assert!(row.rate.is_nan());
        let row: Row = serde_json::from_str(r#"{"rate":2.5}"#).unwrap();
        assert_eq!(row.rate, 2.5);
        assert!(serde_json::from_str::<Row>(r#"{"rate":"fast"}"#).is_err());
    }
}
