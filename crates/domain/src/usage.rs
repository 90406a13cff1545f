//! Token usage and cost, in integers: cost is in micro-units of the billing currency,
//! never a float.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ValidationError;

/// Usage reported for one model call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
}

impl Usage {
    pub const MAX_MODEL_LEN: usize = 128;
    /// Counters stay within `i64`, the widest integer every SQL backend stores exactly.
    pub const MAX_COUNTER: u64 = i64::MAX as u64;

    /// # Errors
    /// When a field is missing, negative, fractional or out of range, or `model` is empty.
    pub fn parse(data: Value) -> Result<Self, ValidationError> {
        let raw: RawUsage = serde_json::from_value(data)
            .map_err(|e| ValidationError::new("data", format!("invalid `usage.reported` data: {e}")))?;
        if raw.model.is_empty() || raw.model.len() > Self::MAX_MODEL_LEN {
            return Err(ValidationError::new("data", "`model` must be 1 to 128 bytes"));
        }
        if [raw.input_tokens, raw.output_tokens, raw.cost_micros].into_iter().any(|n| n > Self::MAX_COUNTER) {
            return Err(ValidationError::new("data", "usage counters must be at most 2^63 - 1"));
        }
        Ok(Self {
            model: raw.model,
            input_tokens: raw.input_tokens,
            output_tokens: raw.output_tokens,
            cost_micros: raw.cost_micros,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_micros": self.cost_micros,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(model: &str, counter: u64) -> Value {
        json!({"model": model, "input_tokens": counter, "output_tokens": counter, "cost_micros": counter})
    }

    #[test]
    fn a_model_name_is_one_to_128_bytes() {
        assert_eq!(Usage::parse(usage("", 1)).unwrap_err().field, "data");
        let longest = "é".repeat(64);
        assert_eq!(Usage::parse(usage(&longest, 1)).unwrap().model, longest);
        assert!(Usage::parse(usage(&format!("{longest}x"), 1)).is_err(), "129 bytes");
    }

    #[test]
    fn counters_up_to_i64_max_are_kept_and_larger_ones_refused() {
        let max = Usage::parse(usage("m", Usage::MAX_COUNTER)).unwrap();
        assert_eq!(max.to_json(), usage("m", Usage::MAX_COUNTER));
        for field in ["input_tokens", "output_tokens", "cost_micros"] {
            let mut data = usage("m", 0);
            data[field] = json!(Usage::MAX_COUNTER + 1);
            assert_eq!(Usage::parse(data).unwrap_err().message, "usage counters must be at most 2^63 - 1");
        }
    }
}
