//! The `context` osquery sends with `generate`: constraints on columns and the columns used.
//!
//! Only constraints that cut work are applied (`time` with =, >, >=, <, <=; `pid` with =);
//! SQLite re-checks every constraint on the rows returned, so ignoring one is always correct.

use std::collections::HashSet;

use serde_json::Value;

/// osquery's constraint operators (`osquery/core/tables.h`).
pub const OP_EQUALS: i64 = 2;
pub const OP_GREATER_THAN: i64 = 4;
pub const OP_LESS_THAN_OR_EQUALS: i64 = 8;
pub const OP_LESS_THAN: i64 = 16;
pub const OP_GREATER_THAN_OR_EQUALS: i64 = 32;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn from_osquery(op: i64) -> Option<Op> {
        match op {
            OP_EQUALS => Some(Op::Eq),
            OP_GREATER_THAN => Some(Op::Gt),
            OP_GREATER_THAN_OR_EQUALS => Some(Op::Ge),
            OP_LESS_THAN => Some(Op::Lt),
            OP_LESS_THAN_OR_EQUALS => Some(Op::Le),
            _ => None,
        }
    }

    fn test(self, left: f64, right: f64) -> bool {
        match self {
            Op::Eq => left == right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
        }
    }
}

/// What a `generate` call asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Constraints on `time`.
    pub time: Vec<(Op, f64)>,
    /// Equality constraints on `pid` (all must hold).
    pub pid: Vec<f64>,
    /// Columns the query uses; None means all.
    pub cols_used: Option<HashSet<String>>,
}

impl Query {
    pub fn time_matches(&self, time: u64) -> bool {
        self.time.iter().all(|&(op, v)| op.test(time as f64, v))
    }

    pub fn pid_matches(&self, pid: u32) -> bool {
        self.pid.iter().all(|&v| f64::from(pid) == v)
    }

    pub fn uses(&self, column: &str) -> bool {
        self.cols_used.as_ref().is_none_or(|c| c.contains(column))
    }
}

fn number(expr: &Value, column: &str) -> Result<f64, String> {
    let parsed = match expr {
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match parsed {
        Some(v) if v.is_finite() => Ok(v),
        _ => Err(format!(
            "constraint on {column}: expected a number, got {expr}"
        )),
    }
}

/// Parse the `context` JSON string of a `generate` request.
pub fn parse_context(context: &str) -> Result<Query, String> {
    let mut query = Query::default();
    if context.trim().is_empty() {
        return Ok(query);
    }
    let root: Value =
        serde_json::from_str(context).map_err(|e| format!("context is not valid JSON: {e}"))?;
    let root = root
        .as_object()
        .ok_or_else(|| "context is not a JSON object".to_string())?;

    if let Some(cols) = root.get("colsUsed") {
        let cols = cols
            .as_array()
            .ok_or_else(|| "colsUsed is not an array".to_string())?;
        query.cols_used = Some(
            cols.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
        );
    }

    let Some(constraints) = root.get("constraints") else {
        return Ok(query);
    };
    let constraints = constraints
        .as_array()
        .ok_or_else(|| "constraints is not an array".to_string())?;
    for c in constraints {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("constraint without a name: {c}"))?;
        let list = match c.get("list") {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.is_empty() => continue,
            Some(Value::Array(list)) => list,
            Some(other) => return Err(format!("constraint list of {name} is not a list: {other}")),
        };
        for item in list {
            let op = item
                .get("op")
                .and_then(|o| o.as_i64().or_else(|| o.as_str()?.parse().ok()))
                .ok_or_else(|| format!("constraint on {name} without a numeric op: {item}"))?;
            let Some(op) = Op::from_osquery(op) else {
                continue;
            };
            let expr = item.get("expr").unwrap_or(&Value::Null);
            match name {
                "time" => query.time.push((op, number(expr, name)?)),
                "pid" if op == Op::Eq => query.pid.push(number(expr, name)?),
                _ => {}
            }
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(constraints: &str) -> String {
        format!(r#"{{"constraints":{constraints},"colsUsed":["pid","time"],"colsUsedBitset":3}}"#)
    }

    #[test]
    fn parses_time_and_pid_constraints() {
        let q = parse_context(&ctx(
            r#"[{"name":"time","list":[{"op":32,"expr":"100"},{"op":16,"expr":"200"}],"affinity":"BIGINT"},
                {"name":"pid","list":[{"op":2,"expr":"42"}],"affinity":"BIGINT"},
                {"name":"path","list":[{"op":65,"expr":"/tmp/%"}],"affinity":"TEXT"},
                {"name":"uid","list":[],"affinity":"BIGINT"}]"#,
        ))
        .expect("valid context");
        assert_eq!(q.time, vec![(Op::Ge, 100.0), (Op::Lt, 200.0)]);
        assert_eq!(q.pid, vec![42.0]);
        assert!(q.time_matches(100) && q.time_matches(199));
        assert!(!q.time_matches(99) && !q.time_matches(200));
        assert!(q.pid_matches(42) && !q.pid_matches(43));
        assert!(q.uses("pid") && !q.uses("cmdline"));
    }

    #[test]
    fn every_time_operator() {
        for (op, ok, bad) in [(2, 5, 6), (4, 6, 5), (32, 5, 4), (16, 4, 5), (8, 5, 6)] {
            let q = parse_context(&ctx(&format!(
                r#"[{{"name":"time","list":[{{"op":{op},"expr":"5"}}]}}]"#
            )))
            .expect("valid");
            assert!(q.time_matches(ok), "op {op} should match {ok}");
            assert!(!q.time_matches(bad), "op {op} should not match {bad}");
        }
    }

    #[test]
    fn old_cores_send_an_empty_string_list() {
        let q = parse_context(r#"{"constraints":[{"name":"time","list":"","affinity":"BIGINT"}]}"#)
            .expect("valid");
        assert_eq!(q, Query::default());
        assert!(q.uses("anything"));
        assert_eq!(parse_context("").expect("empty"), Query::default());
    }

    #[test]
    fn malformed_contexts_are_errors() {
        for bad in [
            "{",
            "[]",
            r#"{"constraints":{}}"#,
            r#"{"constraints":[{"list":[]}]}"#,
            r#"{"constraints":[{"name":"time","list":5}]}"#,
            r#"{"constraints":[{"name":"time","list":[{"op":"x","expr":"1"}]}]}"#,
            r#"{"constraints":[{"name":"time","list":[{"op":4,"expr":"soon"}]}]}"#,
            r#"{"constraints":[{"name":"pid","list":[{"op":2,"expr":"NaN"}]}]}"#,
            r#"{"colsUsed":"pid"}"#,
        ] {
            assert!(parse_context(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn unsupported_operators_are_ignored() {
        let q = parse_context(&ctx(
            r#"[{"name":"pid","list":[{"op":4,"expr":"1"},{"op":65,"expr":"x"}]}]"#,
        ))
        .expect("valid");
        assert!(q.pid.is_empty());
    }

    mod fuzz {
        use super::super::parse_context;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,12}".prop_map(serde_json::Value::from),
                prop_oneof![
                    Just("time"),
                    Just("pid"),
                    Just("op"),
                    Just("list"),
                    Just("expr")
                ]
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("constraints".to_string()),
                            Just("name".to_string()),
                            Just("list".to_string()),
                            Just("op".to_string()),
                            Just("expr".to_string()),
                            Just("colsUsed".to_string()),
                            ".{0,6}"
                        ],
                        inner,
                        0..5
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any string gets a query or an error, never a panic.
            #[test]
            fn arbitrary_text_never_panics(s in ".{0,200}") {
                let _ = parse_context(&s);
            }

            /// Any JSON shaped like a context, however wrong its types, never panics.
            #[test]
            fn arbitrary_json_never_panics(v in json_value()) {
                let _ = parse_context(&v.to_string());
            }
        }
    }
}
