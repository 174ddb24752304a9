//! OTLP attribute values rendered as text for the `Map<Utf8, Utf8>` columns,
//! and the lookups of the semantic-convention keys faasight promotes to
//! columns (`service.name`, `faas.name`, `faas.invocation_id`, …).

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// Text form of a value: strings as they are, scalars in their usual
/// notation, arrays and key-value lists as JSON, bytes as lowercase hex.
/// `None` for an empty value. Strings and booleans are borrowed: the
/// decoders turn every attribute of every span into its text, and a copy
/// of each string was an allocation apiece.
pub fn value_to_string(v: &AnyValue) -> Option<Cow<'_, str>> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        Value::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::IntValue(i) => Cow::Owned(i.to_string()),
        Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        Value::BytesValue(b) => Cow::Owned(hex::encode(b)),
        Value::ArrayValue(_) | Value::KvlistValue(_) => Cow::Owned(value_to_json(v).to_string()),
        // A string-table index only has meaning inside profiles.
        Value::StringValueStrindex(_) => return None,
    })
}

/// JSON form of a value. Nesting depth is bounded by the decoders (prost and
/// serde_json both stop at about a hundred levels), so recursion is safe.
pub fn value_to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v.value.as_ref() {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Some(Value::BytesValue(b)) => J::String(hex::encode(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(value_to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map_or(J::Null, value_to_json);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        Some(Value::StringValueStrindex(_)) => J::Null,
    }
}

/// Key-value list as a JSON object (used for events and links).
pub fn attributes_to_json(attrs: &[KeyValue]) -> serde_json::Value {
    serde_json::Value::Object(
        attrs
            .iter()
            .map(|kv| {
                let v = kv
                    .value
                    .as_ref()
                    .map_or(serde_json::Value::Null, value_to_json);
                (kv.key.clone(), v)
            })
            .collect(),
    )
}

pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()
}

/// A non-empty string attribute, borrowed (other value types: `None`).
pub fn find_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attrs, key)?.value.as_ref()? {
        Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

pub fn find_string(attrs: &[KeyValue], key: &str) -> Option<String> {
    find_text(attrs, key).map(Cow::into_owned)
}

/// [`find_string`] without a copy when the value is a string.
pub fn find_text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    find(attrs, key)
        .and_then(value_to_string)
        .filter(|s| !s.is_empty())
}

/// A boolean attribute; also accepts the strings `true`/`false`, which some
/// instrumentations send.
pub fn find_bool(attrs: &[KeyValue], key: &str) -> Option<bool> {
    match find(attrs, key)?.value.as_ref()? {
        Value::BoolValue(b) => Some(*b),
        Value::StringValue(s) => s.parse().ok(),
        Value::IntValue(i) => Some(*i != 0),
        _ => None,
    }
}

/// The resource-level facts every row of a resource shares.
#[derive(Debug, Default, Clone)]
pub struct ResourceFacts {
    pub service_name: Option<String>,
    pub function_name: Option<String>,
}

impl ResourceFacts {
    pub fn from_attributes(attrs: &[KeyValue]) -> Self {
        let service_name = find_string(attrs, "service.name");
        let function_name = find_string(attrs, "faas.name").or_else(|| service_name.clone());
        ResourceFacts {
            service_name,
            function_name,
        }
    }
}

/// The invocation id of a handler span or log record: `faas.invocation_id`,
/// or the older `faas.execution`.
pub fn request_id(attrs: &[KeyValue]) -> Option<String> {
    find_string(attrs, "faas.invocation_id").or_else(|| find_string(attrs, "faas.execution"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn scalars_and_nested_values_render() {
        let nested = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("a", Value::IntValue(1)),
                    kv(
                        "b",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::BoolValue(true)),
                            }],
                        }),
                    ),
                ],
            })),
        };
        assert_eq!(
            value_to_string(&nested).as_deref(),
            Some(r#"{"a":1,"b":[true]}"#)
        );
        let bytes = AnyValue {
            value: Some(Value::BytesValue(vec![0xde, 0xad])),
        };
        assert_eq!(value_to_string(&bytes).as_deref(), Some("dead"));
        assert_eq!(value_to_string(&AnyValue { value: None }), None);
    }

    #[test]
    fn function_name_falls_back_to_service_name() {
        let attrs = vec![kv("service.name", Value::StringValue("svc".into()))];
        let facts = ResourceFacts::from_attributes(&attrs);
        assert_eq!(facts.function_name.as_deref(), Some("svc"));
        let attrs = vec![
            kv("service.name", Value::StringValue("svc".into())),
            kv("faas.name", Value::StringValue("fn".into())),
        ];
        assert_eq!(
            ResourceFacts::from_attributes(&attrs)
                .function_name
                .as_deref(),
            Some("fn")
        );
    }

    #[test]
    fn request_id_prefers_invocation_id() {
        let attrs = vec![
            kv("faas.execution", Value::StringValue("old".into())),
            kv("faas.invocation_id", Value::StringValue("new".into())),
        ];
        assert_eq!(request_id(&attrs).as_deref(), Some("new"));
        assert_eq!(request_id(&attrs[..1]).as_deref(), Some("old"));
    }

    #[test]
    fn coldstart_accepts_strings() {
        let attrs = vec![kv("faas.coldstart", Value::StringValue("true".into()))];
        assert_eq!(find_bool(&attrs, "faas.coldstart"), Some(true));
    }
}
