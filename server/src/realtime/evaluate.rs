//! Deciding what one transaction means for each candidate subscription: which changes it
//! sees as insert, update, delete or remove (evaluating the filter and the visibility rule
//! on the old and the new row image), each item serialized once and shared by the
//! subscriptions with the same projection ([`ItemCache`]). How items and frames are written
//! is `protocol::realtime::changes`. Used by the live router and by catch-up alike, so both
//! paths give the same answer.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{
    feed::{Change, Cursor, Op},
    rows::RowSource,
    SubPlan,
};
use crate::{
    policy::{compile::Visibility, Lookup},
    protocol::realtime::{
        changes::{changes_frame, EncodedItem, RowImage},
        ChangeOp,
    },
    realtime::catalog::{TableCatalog, VERSION_COLUMN},
    store::{realtime::VisibilityCheck, SessionIdentity, StoreError},
};

/// What a subscription gets from one transaction.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing it can see changed.
    Nothing,
    /// A `changes` frame holding this many changes.
    Frame(Bytes, usize),
    /// The subscription must resync, for this reason (e.g. the table was truncated).
    Resync(&'static str),
}

/// For policies outside the fast path: the visibility of each row image, per identity,
/// answered by one SQL statement per distinct identity for the whole batch.
#[derive(Debug, Default)]
pub struct SqlAnswers {
    /// (identity key, expression) → per change: (old visible, new visible).
    answers: HashMap<(String, String), Vec<(bool, bool)>>,
    /// SQL statements the check ran.
    pub statements: usize,
}

/// (role, combined policy expression): subscriptions checked together.
type GroupKey = (&'static str, String);
/// An identity with its key (role and claims).
type KeyedIdentity = (String, Arc<crate::auth::Identity>);

fn identity_key(plan: &SubPlan) -> String {
    format!(
        "{}|{}",
        plan.identity.role.pg_role(),
        plan.identity.claims_json()
    )
}

impl SqlAnswers {
    /// Ask Postgres about every subscription in `plans` whose visibility is checked in SQL,
    /// for the changes of one table: one check per (role, expression), holding every
    /// distinct identity of that role (see `Store::visible_rows` for when they share one
    /// statement).
    pub async fn fetch(
        rows: &dyn RowSource,
        table: &TableCatalog,
        changes: &[&Change],
        plans: &[&Arc<SubPlan>],
    ) -> Result<SqlAnswers, StoreError> {
        // (role, expression) → identities (distinct by key).
        let mut groups: Vec<(GroupKey, Vec<KeyedIdentity>)> = Vec::new();
        for plan in plans {
            let Visibility::Sql(expr) = &plan.visibility else {
                continue;
            };
            let gk = (plan.identity.role.pg_role(), expr.clone());
            let ik = identity_key(plan);
            let group = match groups.iter_mut().find(|(k, _)| *k == gk) {
                Some((_, g)) => g,
                None => {
                    groups.push((gk, Vec::new()));
                    let last = groups.len() - 1;
                    &mut groups[last].1
                }
            };
            if !group.iter().any(|(k, _)| *k == ik) {
                group.push((ik, plan.identity.clone()));
            }
        }
        let mut out = SqlAnswers::default();
        if groups.is_empty() {
            return Ok(out);
        }
        // A missing image is an empty object (jsonb_populate_record needs an object); its
        // answer is never used.
        let image = |r: &Option<Value>| match r {
            Some(v @ Value::Object(_)) => v.clone(),
            _ => Value::Object(Map::new()),
        };
        let mut images = Vec::with_capacity(changes.len() * 2);
        for c in changes {
            images.push(image(&c.old_row));
            images.push(image(&c.new_row));
        }
        let checks: Vec<VisibilityCheck> = groups
            .iter()
            .map(|((_, expr), ids)| VisibilityCheck {
                identities: ids
                    .iter()
                    .map(|(_, i)| SessionIdentity::from(&**i))
                    .collect(),
                expr: expr.clone(),
                rows: images.clone(),
            })
            .collect();
        out.statements = checks
            .iter()
            .map(|c| {
                if c.identities.len() > 1
                    && crate::store::realtime::identity_free(&c.expr).is_some()
                {
                    1
                } else {
                    c.identities.len()
                }
            })
            .sum();
        let flags = rows.visible_rows(table.table(), &checks).await?;
        for (((_, expr), ids), per_identity) in groups.into_iter().zip(flags) {
            for ((ik, _), f) in ids.into_iter().zip(per_identity) {
                let pairs = f
                    .chunks(2)
                    .map(|p| (p.first() == Some(&true), p.get(1) == Some(&true)))
                    .collect();
                out.answers.insert((ik, expr.clone()), pairs);
            }
        }
        Ok(out)
    }

    fn get(&self, plan: &SubPlan, expr: &str, i: usize) -> (bool, bool) {
        self.answers
            .get(&(identity_key(plan), expr.to_string()))
            .and_then(|v| v.get(i).copied())
            .unwrap_or((false, false))
    }
}

/// The row image as an object, if it is one.
fn object(v: &Option<Value>) -> Option<&Map<String, Value>> {
    v.as_ref().and_then(Value::as_object)
}

/// Serialized items shared by every subscription with the same projection.
#[derive(Default)]
pub struct ItemCache {
    items: HashMap<(usize, ChangeOp, usize), EncodedItem>,
}

/// The referenced tables' rows as relational policies see them: before the transaction
/// (for old row images) and after it (for new ones).
pub struct Rel<'a> {
    pub before: &'a dyn Lookup,
    pub after: &'a dyn Lookup,
}

/// Evaluate the changes of one table within one transaction for `plan`.
pub fn evaluate(
    plan: &SubPlan,
    changes: &[&Change],
    sql: &SqlAnswers,
    rel: &Rel<'_>,
    cursor: Cursor,
    cache: &mut ItemCache,
) -> Outcome {
    match evaluate_items(plan, changes, sql, rel, cache) {
        Err(reason) => Outcome::Resync(reason),
        Ok(items) if items.is_empty() => Outcome::Nothing,
        Ok(items) => Outcome::Frame(
            changes_frame(&plan.encoded_id, plan.log.wire(cursor), &items),
            items.len(),
        ),
    }
}

/// The primary key of a row image as text, in the table's key order (equal for the same
/// key whichever image it comes from).
pub fn pk_text(primary_key: &[String], row: &Map<String, Value>) -> String {
    let pk: Map<String, Value> = primary_key
        .iter()
        .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Value::Object(pk).to_string()
}

/// Rows of the subscribed table whose visibility a change to a referenced table may have
/// changed (`rows`, as of the transaction), as `insert` (now visible, was not) and `remove`
/// (was visible, is not) items. Rows the transaction itself changed are left to their own
/// items. Versions are at least `floor` (the referenced change's version), so a row that
/// leaves and comes back with an unchanged `_v` is not mistaken for an older state.
pub fn move_items(
    plan: &SubPlan,
    rows: &[Map<String, Value>],
    changed: &std::collections::HashSet<String>,
    rel: &Rel<'_>,
    floor: i64,
) -> Vec<EncodedItem> {
    let Visibility::Fast(p) = &plan.visibility else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for row in rows {
        let pk = pk_text(&plan.catalog.primary_key, row);
        if changed.contains(&pk) || !plan.filter.eval(row) {
            continue;
        }
        let before = p.eval_with(row, rel.before);
        let after = p.eval_with(row, rel.after);
        let op = match (before, after) {
            (false, true) => ChangeOp::Insert,
            (true, false) => ChangeOp::Remove,
            _ => continue,
        };
        let v = row
            .get(VERSION_COLUMN)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(floor);
        let pk: Map<String, Value> = plan
            .catalog
            .primary_key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        out.push(EncodedItem::new(
            op,
            &pk,
            v,
            Some(RowImage {
                row,
                columns: plan.columns.as_deref(),
            }),
        ));
    }
    out
}

/// The items of one table's changes within one transaction for `plan`; `Err` when the
/// subscription must resync instead.
pub fn evaluate_items(
    plan: &SubPlan,
    changes: &[&Change],
    sql: &SqlAnswers,
    rel: &Rel<'_>,
    cache: &mut ItemCache,
) -> Result<Vec<EncodedItem>, &'static str> {
    let mut items: Vec<EncodedItem> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        if c.op == Op::Truncate {
            return Err("truncate");
        }
        if c.op == Op::Schema {
            // Rows on either side of this point may differ in shape (or be missing while
            // capture was stopped): the client must not apply them without knowing.
            return Err(match c.schema_event() {
                Some("capture-stopped") => "capture stopped",
                Some("capture-resumed") => "capture resumed",
                _ => "schema changed",
            });
        }
        let (old_ok, new_ok) = match &plan.visibility {
            Visibility::Fast(p) => (
                object(&c.old_row).is_some_and(|r| p.eval_with(r, rel.before)),
                object(&c.new_row).is_some_and(|r| p.eval_with(r, rel.after)),
            ),
            Visibility::Sql(expr) => sql.get(plan, expr, i),
        };
        let old_in = old_ok && object(&c.old_row).is_some_and(|r| plan.filter.eval(r));
        let new_in = new_ok && object(&c.new_row).is_some_and(|r| plan.filter.eval(r));
        let op = match (c.op, old_in, new_in) {
            (Op::Insert, _, true) => ChangeOp::Insert,
            (Op::Update, true, true) => ChangeOp::Update,
            (Op::Update, false, true) => ChangeOp::Insert,
            (Op::Update, true, false) => ChangeOp::Remove,
            (Op::Delete, true, _) => ChangeOp::Delete,
            _ => continue,
        };
        let projection = plan
            .columns
            .as_ref()
            .map(|c| Arc::as_ptr(c) as *const u8 as usize)
            .unwrap_or(0);
        let item = cache
            .items
            .entry((i, op, projection))
            .or_insert_with(|| serialize_item(c, op, plan.columns.as_deref()));
        items.push(item.clone());
    }
    Ok(items)
}

/// One item as the wire's `ChangeItem`, projected to `columns`.
/// (The row image, written for `insert` and `update` only, is the new one.)
pub fn serialize_item(c: &Change, op: ChangeOp, columns: Option<&[String]>) -> EncodedItem {
    let row = object(&c.new_row).map(|row| RowImage { row, columns });
    EncodedItem::new(op, &c.pk, c.version, row)
}
