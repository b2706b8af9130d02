//! What realtime knows about a subscribed table: its columns and their kinds, its key,
//! whether it is synced, and per role what may be read, with each policy compiled for the
//! fast path where it can be, and the tables relational policies read (for the membership
//! index). Built from the plain catalog facts `store::realtime` reads, so every rule about
//! which policies the server may evaluate lives here and is unit-tested without Postgres.

use std::collections::HashMap;

use crate::{
    auth::Role,
    policy::{
        compile::{tables_read, Access, Policy},
        parse::{parse_policy_in, PolicyExpr},
        visibility::{policy_disjuncts, sub_selects_unaffected, RefRows},
        ColumnKind,
    },
    store::realtime::{ColumnFacts, TableFacts},
};

pub use crate::store::realtime::VERSION_COLUMN;

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, used for casts of bound text parameters.
    pub sql_type: String,
    pub kind: ColumnKind,
    /// SELECT privilege, per role (see [`role_index`]).
    selectable: [bool; 3],
}

/// What realtime needs to know about one table.
#[derive(Debug, Clone)]
pub struct TableCatalog {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    /// Whether change capture is enabled on the table.
    pub synced: bool,
    access: [Access; 3],
    /// The tables the fast-path policies' sub-selects read, with what the server needs to
    /// keep them in memory (see `realtime::relation`).
    pub refs: Vec<RefTable>,
}

/// A table a relational policy reads (e.g. `members`), as the membership index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTable {
    pub schema: String,
    pub name: String,
    pub primary_key: Vec<String>,
    pub kinds: HashMap<String, ColumnKind>,
    /// `format_type` of each column, for casts of bound text parameters.
    pub sql_types: HashMap<String, String>,
}

impl RefTable {
    pub fn key(&self) -> (String, String) {
        (self.schema.clone(), self.name.clone())
    }
}

/// The index of `role` in the per-role arrays of `store::realtime` (`API_ROLES`).
fn role_index(role: Role) -> usize {
    match role {
        Role::Anon => 0,
        Role::Authenticated => 1,
        Role::Service => 2,
    }
}

impl TableCatalog {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `schema.table` for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `(schema, name)`, as the store's realtime reads take a table.
    pub fn table(&self) -> (&str, &str) {
        (&self.schema, &self.name)
    }

    pub fn access(&self, role: Role) -> &Access {
        &self.access[role_index(role)]
    }

    pub fn can_select(&self, role: Role, column: &str) -> bool {
        self.column(column)
            .is_some_and(|c| c.selectable[role_index(role)])
    }

    /// Compile the catalog facts of a table and of the tables its policies read.
    pub fn build(table: TableFacts, referenced: Vec<TableFacts>) -> TableCatalog {
        let columns: Vec<ColumnInfo> = table.columns.iter().map(column_info).collect();
        let kinds = kinds_of(&columns);
        let refs: HashMap<(String, String), RefFacts> = referenced
            .into_iter()
            .map(|f| ((f.schema.clone(), f.name.clone()), RefFacts::new(f)))
            .collect();
        let mut per_role: [Vec<Policy>; 3] = Default::default();
        for p in &table.policies {
            for (i, list) in per_role.iter_mut().enumerate() {
                if !p.applies[i] {
                    continue;
                }
                let fast = fast_form(&p.sql, &table.name, &kinds, &refs, i);
                list.push(Policy {
                    name: p.name.clone(),
                    permissive: p.permissive,
                    sql: p.sql.clone(),
                    fast,
                });
            }
        }
        let access = [0, 1, 2].map(|i| {
            if !columns.iter().any(|c| c.selectable[i]) {
                Access::Denied
            } else if !table.rls || table.bypass[i] {
                Access::AllRows
            } else {
                Access::Policies(std::mem::take(&mut per_role[i]))
            }
        });
        // Only the tables a role's fast-path policies read need a copy in the server.
        let mut used_refs: Vec<(String, String)> = Vec::new();
        for a in &access {
            let Access::Policies(ps) = a else { continue };
            for t in ps
                .iter()
                .filter_map(|p| p.fast.as_ref())
                .flat_map(tables_read)
            {
                if !used_refs.contains(&t) {
                    used_refs.push(t);
                }
            }
        }
        let refs = used_refs
            .iter()
            .filter_map(|k| refs.get(k).map(|f| f.table.clone()))
            .collect();
        TableCatalog {
            schema: table.schema,
            name: table.name,
            columns,
            primary_key: table.primary_key,
            synced: table.synced,
            access,
            refs,
        }
    }
}

/// The fast-path form of policy `sql` of table `table` for the role at `role`: `None`
/// when it is outside the subset, or when a sub-select reads a table the server may not
/// evaluate for that role, or whose row-level security could change the sub-select's result.
fn fast_form(
    sql: &str,
    table: &str,
    kinds: &HashMap<String, ColumnKind>,
    refs: &HashMap<(String, String), RefFacts>,
    role: usize,
) -> Option<PolicyExpr> {
    let per_role = |s: &str, n: &str| {
        refs.get(&(s.to_string(), n.to_string()))
            .and_then(|f| f.per_role[role].as_ref())
    };
    let columns = |s: &str, n: &str| per_role(s, n).map(|(cols, _)| cols.clone());
    let rows = |s: &str, n: &str| per_role(s, n).map(|(_, rows)| rows.clone());
    parse_policy_in(sql, table, kinds, &columns).filter(|f| sub_selects_unaffected(f, &rows))
}

fn column_info(c: &ColumnFacts) -> ColumnInfo {
    let mut kind = ColumnKind::from_typname(&c.typname);
    // A nondeterministic collation makes `=` on text differ from byte equality.
    if kind == ColumnKind::Text && !c.deterministic {
        kind = ColumnKind::Other;
    }
    ColumnInfo {
        name: c.name.clone(),
        sql_type: c.sql_type.clone(),
        kind,
        selectable: c.selectable,
    }
}

fn kinds_of(columns: &[ColumnInfo]) -> HashMap<String, ColumnKind> {
    columns.iter().map(|c| (c.name.clone(), c.kind)).collect()
}

/// A referenced table, and per role its columns the role may read and what its row-level
/// security lets the role see, or `None` if the server may not evaluate sub-selects over it
/// for that role.
struct RefFacts {
    table: RefTable,
    per_role: [Option<(HashMap<String, ColumnKind>, RefRows)>; 3],
}

impl RefFacts {
    /// Per role, a referenced table may be evaluated in the server only when Postgres would
    /// read it exactly as the server's copy has it: a plain table (no inheritance children,
    /// not partitioned), synced (so the server follows its changes), with a primary key,
    /// only the columns the role may read, and no restrictive policy for the role. Its
    /// permissive policies are kept so that `visibility` can tell whether they can change a
    /// given sub-select's result.
    fn new(f: TableFacts) -> RefFacts {
        let columns: Vec<ColumnInfo> = f.columns.iter().map(column_info).collect();
        let kinds = kinds_of(&columns);
        let eligible = f.plain && f.synced && !f.primary_key.is_empty();
        let per_role = [0, 1, 2].map(|i| {
            if !eligible {
                return None;
            }
            let rows = if !f.rls || f.bypass[i] {
                RefRows::All
            } else {
                let mut disjuncts = Vec::new();
                for p in f.policies.iter().filter(|p| p.applies[i]) {
                    if !p.permissive {
                        return None;
                    }
                    disjuncts.extend(policy_disjuncts(&p.sql, &f.name, &kinds));
                }
                RefRows::AnyOf(disjuncts)
            };
            let cols = columns
                .iter()
                .filter(|c| c.selectable[i])
                .map(|c| (c.name.clone(), c.kind))
                .collect();
            Some((cols, rows))
        });
        RefFacts {
            table: RefTable {
                schema: f.schema,
                name: f.name,
                primary_key: f.primary_key,
                sql_types: columns
                    .iter()
                    .map(|c| (c.name.clone(), c.sql_type.clone()))
                    .collect(),
                kinds,
            },
            per_role,
        }
    }
}

/// Catalog facts for unit tests (here and in the router's).
#[cfg(test)]
pub(super) mod fixtures {
    use crate::store::realtime::{ColumnFacts, PolicyFacts, TableFacts};

    pub(in crate::realtime) fn column(name: &str, typname: &str) -> ColumnFacts {
        ColumnFacts {
            name: name.into(),
            sql_type: typname.into(),
            typname: typname.into(),
            deterministic: true,
            selectable: [true; 3],
        }
    }

    pub(in crate::realtime) fn policy(name: &str, sql: &str, permissive: bool) -> PolicyFacts {
        PolicyFacts {
            name: name.into(),
            permissive,
            sql: sql.into(),
            applies: [true; 3],
        }
    }

    pub(in crate::realtime) fn table(
        name: &str,
        columns: Vec<ColumnFacts>,
        policies: Vec<PolicyFacts>,
    ) -> TableFacts {
        TableFacts {
            schema: "public".into(),
            name: name.into(),
            plain: true,
            rls: true,
            synced: true,
            bypass: [false, false, true],
            columns,
            primary_key: vec!["id".into()],
            policies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{column, policy, table};
    use super::*;
    use crate::store::realtime::PolicyFacts;

    const MEMBER_OF_LIST: &str = "(EXISTS ( SELECT 1 FROM public.members m WHERE ((m.list_id = todos.list_id) AND (m.user_id = rowcast.uid()))))";

    fn todos() -> TableFacts {
        table(
            "todos",
            vec![
                column("id", "int8"),
                column("list_id", "int8"),
                column("owner", "uuid"),
                column(VERSION_COLUMN, "int8"),
            ],
            vec![policy("member", MEMBER_OF_LIST, true)],
        )
    }

    fn members(policies: Vec<PolicyFacts>) -> TableFacts {
        table(
            "members",
            vec![
                column("id", "int8"),
                column("list_id", "int8"),
                column("user_id", "uuid"),
            ],
            policies,
        )
    }

    fn fast(c: &TableCatalog, role: Role) -> Vec<bool> {
        match c.access(role) {
            Access::Policies(ps) => ps.iter().map(|p| p.fast.is_some()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_owner_rule_takes_the_fast_path_and_the_bypassing_role_reads_all_rows() {
        let mut t = todos();
        t.policies = vec![policy("own", "(owner = rowcast.uid())", true)];
        let c = TableCatalog::build(t, vec![]);
        assert_eq!(fast(&c, Role::Authenticated), [true]);
        assert!(matches!(c.access(Role::Service), Access::AllRows));
        assert!(c.refs.is_empty());
        assert!(c.can_select(Role::Anon, "owner"));
        assert!(!c.can_select(Role::Anon, "nope"));
    }

    #[test]
    fn a_membership_rule_is_fast_when_members_is_readable_as_the_server_has_it() {
        let self_rows = policy("self", "(user_id = rowcast.uid())", true);
        let c = TableCatalog::build(todos(), vec![members(vec![self_rows])]);
        assert_eq!(fast(&c, Role::Authenticated), [true]);
        assert_eq!(c.refs.len(), 1);
        assert_eq!(
            c.refs[0].key(),
            ("public".to_string(), "members".to_string())
        );
        assert_eq!(c.refs[0].primary_key, ["id"]);
    }

    #[test]
    fn a_membership_rule_falls_back_to_sql_when_members_cannot_be_mirrored() {
        type Change = Box<dyn Fn(&mut TableFacts)>;
        let cases: Vec<(&str, Change)> = vec![
            ("not synced", Box::new(|m| m.synced = false)),
            ("has children", Box::new(|m| m.plain = false)),
            ("no primary key", Box::new(|m| m.primary_key.clear())),
            (
                "restrictive policy",
                Box::new(|m| m.policies.push(policy("r", "true", false))),
            ),
            (
                "its own policy hides rows the rule needs",
                Box::new(|m| m.policies = vec![policy("team", "(list_id = 7)", true)]),
            ),
            (
                "the role may not read the compared column",
                Box::new(|m| m.columns[2].selectable = [false; 3]),
            ),
        ];
        for (why, change) in cases {
            let mut m = members(vec![]);
            m.rls = false;
            change(&mut m);
            if why.contains("policy") {
                m.rls = true;
            }
            let c = TableCatalog::build(todos(), vec![m]);
            assert_eq!(fast(&c, Role::Authenticated), [false], "{why}");
            assert!(c.refs.is_empty(), "{why}");
        }
        // Not looked up at all (no such table): SQL too.
        let c = TableCatalog::build(todos(), vec![]);
        assert_eq!(fast(&c, Role::Authenticated), [false]);
    }

    #[test]
    fn access_follows_grants_security_and_the_roles_a_policy_names() {
        let mut t = todos();
        for col in &mut t.columns {
            col.selectable = [false, true, true];
        }
        t.policies[0].applies = [false, true, false];
        let c = TableCatalog::build(t.clone(), vec![]);
        assert!(matches!(c.access(Role::Anon), Access::Denied));
        assert_eq!(fast(&c, Role::Authenticated), [false]);
        t.rls = false;
        let c = TableCatalog::build(t, vec![]);
        assert!(matches!(c.access(Role::Authenticated), Access::AllRows));
    }

    #[test]
    fn text_under_a_nondeterministic_collation_is_not_compared_in_the_server() {
        let mut t = todos();
        let mut title = column("title", "text");
        title.deterministic = false;
        t.columns.push(title);
        t.columns.push(column("body", "text"));
        let c = TableCatalog::build(t, vec![]);
        assert_eq!(c.column("title").map(|c| c.kind), Some(ColumnKind::Other));
        assert_eq!(c.column("body").map(|c| c.kind), Some(ColumnKind::Text));
    }
}
