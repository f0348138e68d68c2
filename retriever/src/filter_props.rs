//! Property test (issue 23's fuzz target for the filter path): every
//! filter the validator accepts is one Qdrant's filter parser accepts, and
//! neither panics. A u64 equality value (defect 12) and float equality
//! were once accepted by the one and refused by the other with serde's
//! internal message. Failures proptest finds are kept under
//! `proptest-regressions/` and replayed first on every run.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::filter::scoped;
use crate::types::{Condition, MetaFilter};
use crate::validate;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        "[a-z0-9 é\\-_.]{0,12}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({"a": 1})),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{1,8}", "[ -~]{0,10}"]
}

fn bound() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        (-1e300f64..1e300).prop_map(Some),
        Just(Some(f64::NAN)),
        Just(Some(f64::INFINITY)),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        (key(), scalar()).prop_map(|(key, value)| Condition::Equals { key, value }),
        (key(), prop::collection::vec(scalar(), 0..5))
            .prop_map(|(key, values)| Condition::AnyOf { key, values }),
        (key(), bound(), bound(), bound(), bound()).prop_map(|(key, gt, gte, lt, lte)| {
            Condition::Range {
                key,
                gt,
                gte,
                lt,
                lte,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validated_filters_parse_in_qdrant(
        must in prop::collection::vec(condition(), 0..4),
        must_not in prop::collection::vec(condition(), 0..3),
    ) {
        let f = MetaFilter { must, must_not };
        if validate::filter(&f).is_ok() {
            let v = scoped("tenant", &f, &[]);
            let parsed = serde_json::from_value::<qdrant_edge::Filter>(v.clone());
            prop_assert!(parsed.is_ok(), "{v}: {:?}", parsed.err());
        }
    }
}
