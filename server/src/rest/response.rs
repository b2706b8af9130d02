//! Shaping results into responses: status, `Content-Range`, `Location`, single-object
//! bodies. Framework-free, so a response can be stored for idempotent replay and rebuilt.

use serde_json::Value;

use super::{
    plan::{ReadPlan, Returning, WritePlan},
    RestError,
};

pub const JSON: &str = "application/json; charset=utf-8";
pub const OBJECT: &str = "application/vnd.pgrst.object+json; charset=utf-8";

pub use crate::store::rest_plan::{
    IdempotencyKey, ReadResult, StoredResponse as RestResponse, WriteResult,
};

fn single_object(body: &str, rows: i64) -> Result<String, RestError> {
    if rows != 1 {
        return Err(RestError::NotAcceptable(format!(
            "a single object was requested but {rows} rows matched"
        )));
    }
    let trimmed = body.trim();
    let inner = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    Ok(inner.trim().to_string())
}

fn content_range(offset: u64, rows: i64, total: Option<i64>) -> String {
    let total = total.map_or("*".to_string(), |t| t.to_string());
    if rows <= 0 {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset + rows as u64 - 1)
    }
}

pub fn for_read(plan: &ReadPlan, result: ReadResult) -> Result<RestResponse, RestError> {
    // As PostgREST: an offset past the counted total cannot be satisfied (416).
    if let Some(total) = result.total {
        if plan.node.offset > total.max(0) as u64 {
            return Err(RestError::RangeNotSatisfiable(
                format!(
                    "an offset of {} was requested, but there are only {total} rows",
                    plan.node.offset
                ),
                total.max(0) as u64,
            ));
        }
    }
    let mut headers = vec![(
        "content-range".to_string(),
        content_range(plan.node.offset, result.rows, result.total),
    )];
    let partial = matches!(result.total, Some(t) if result.rows < t);
    let body = if plan.single {
        headers.push(("content-type".into(), OBJECT.into()));
        single_object(&result.body, result.rows)?
    } else {
        headers.push(("content-type".into(), JSON.into()));
        result.body
    };
    Ok(RestResponse {
        status: if partial && !plan.single { 206 } else { 200 },
        headers,
        body: Some(body),
    })
}

/// `base` is the URL path of the table, e.g. `/rest/v1/todos`.
pub fn for_write(
    plan: &WritePlan,
    base: &str,
    result: WriteResult,
) -> Result<RestResponse, RestError> {
    let created = matches!(plan, WritePlan::Insert(p) if !p.put);
    if plan.single() && result.rows != 1 {
        return Err(RestError::NotAcceptable(format!(
            "a single object was requested but the write touched {} rows",
            result.rows
        )));
    }
    let mut headers = vec![(
        "content-range".to_string(),
        if result.rows > 0 {
            format!("0-{}/*", result.rows - 1)
        } else {
            "*/*".to_string()
        },
    )];
    match plan.returning() {
        Some(Returning::Rows(_)) => {
            let body = if plan.single() {
                headers.push(("content-type".into(), OBJECT.into()));
                single_object(&result.body, result.rows)?
            } else {
                headers.push(("content-type".into(), JSON.into()));
                result.body
            };
            Ok(RestResponse {
                status: if created { 201 } else { 200 },
                headers,
                body: Some(body),
            })
        }
        Some(Returning::Keys(_)) => {
            if let Some(location) = location(base, &result.body) {
                headers.push(("location".into(), location));
            }
            Ok(RestResponse {
                status: if created { 201 } else { 204 },
                headers,
                body: None,
            })
        }
        _ => Ok(RestResponse {
            status: if created { 201 } else { 204 },
            headers,
            body: None,
        }),
    }
}

/// `Location` of the first returned row, as a filter on its primary key.
fn location(base: &str, keys_json: &str) -> Option<String> {
    let rows: Value = serde_json::from_str(keys_json).ok()?;
    let Value::Object(first) = rows.as_array()?.first()? else {
        return None;
    };
    if first.is_empty() {
        return None;
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in first {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        query.append_pair(k, &format!("eq.{text}"));
    }
    Some(format!("{base}?{}", query.finish()))
}

pub fn for_rpc(single: bool, body: Option<String>, rows: i64) -> Result<RestResponse, RestError> {
    match body {
        None => Ok(RestResponse {
            status: 204,
            headers: Vec::new(),
            body: None,
        }),
        Some(body) => {
            let (ct, body) = if single && body.trim_start().starts_with('[') {
                (OBJECT, single_object(&body, rows)?)
            } else {
                (JSON, body)
            };
            Ok(RestResponse {
                status: 200,
                headers: vec![("content-type".into(), ct.into())],
                body: Some(body),
            })
        }
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
