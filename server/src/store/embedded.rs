//! The statements that prepare the embedded development cluster (`cluster`): its login
//! role's search path and its database. `cluster` runs them through `psql` because they
//! run before the async runtime (and so the pool) exists.

/// The embedded cluster's login role.
pub const EMBEDDED_USER: &str = "rowcast";
/// The embedded cluster's database.
pub const EMBEDDED_DATABASE: &str = "rowcast";

/// The login role is named `rowcast`, so the default search path (`"$user", public`) would
/// put an admin's unqualified `create table todos` into the `rowcast` schema.
pub const SET_SEARCH_PATH: &str = "alter role rowcast set search_path = public";

/// Prints `1` when the database exists.
pub const DATABASE_EXISTS: &str = "select 1 from pg_database where datname = 'rowcast'";

pub const CREATE_DATABASE: &str = "create database rowcast";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_embedded_role_and_database() {
        assert!(SET_SEARCH_PATH.contains(&format!("role {EMBEDDED_USER} ")));
        assert!(DATABASE_EXISTS.ends_with(&format!("'{EMBEDDED_DATABASE}'")));
        assert!(CREATE_DATABASE.ends_with(&format!(" {EMBEDDED_DATABASE}")));
    }
}
