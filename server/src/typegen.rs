//! `rowcast gen types`: writes a TypeScript file of row types from the database schema, in
//! the `Database` shape the SDK's generics read (`public.Tables.todos.Row|Insert|Update`,
//! the same shape supabase's generator emits, so the typing will look familiar).
//!
//! The catalog read is `store::typegen`; this module only renders and runs the command.

use std::{
    collections::BTreeMap, ffi::OsString, fmt::Write as _, path::PathBuf, process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};

use crate::{
    cluster::EmbeddedPostgres,
    config::DatabaseConfig,
    store::{migrate, typegen::CatalogColumn, Store, StoreError},
};

/// `rowcast gen …`: code generators.
#[derive(Debug, Parser)]
#[command(name = "rowcast gen", about = "Generate code from the database schema")]
pub struct GenCli {
    #[command(subcommand)]
    pub what: GenWhat,
}

#[derive(Debug, Subcommand)]
pub enum GenWhat {
    /// TypeScript row types for `@rowcast/client` (stdout, or `--out FILE`).
    Types(GenTypesArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenTypesArgs {
    /// Database to read; without it, the embedded dev database in `--data-dir` (started,
    /// migrated with the server's and the app's migrations, and stopped again).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Comma-separated schemas to describe.
    #[arg(
        long,
        env = "ROWCAST_REST_SCHEMAS",
        default_value = "public",
        value_delimiter = ','
    )]
    pub schemas: Vec<String>,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, env = "ROWCAST_DATA_DIR", default_value = ".rowcast")]
    pub data_dir: PathBuf,
    #[arg(long, env = "ROWCAST_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
    #[arg(long, env = "ROWCAST_APP_MIGRATIONS")]
    pub app_migrations: Option<PathBuf>,
    /// Trusted CAs for TLS to Postgres, as for `serve`.
    #[arg(long, env = "ROWCAST_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TypegenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Cluster(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Entry point from `main`: `args` are the whole command line (`rowcast gen types …`).
pub fn cli(args: Vec<OsString>) -> ExitCode {
    // `rowcast gen` is the program name clap shows; `types …` follows.
    let argv = std::iter::once(OsString::from("rowcast gen")).chain(args.into_iter().skip(2));
    let parsed = match GenCli::try_parse_from(argv) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let GenWhat::Types(args) = parsed.what;
    match run_types(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rowcast gen types: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_types(args: &GenTypesArgs) -> Result<(), TypegenError> {
    let (url, embedded) = match &args.database_url {
        Some(u) => (u.clone(), None),
        None => {
            let pg = EmbeddedPostgres::start(&args.data_dir.join("pg"), args.pg_bindir.as_deref())
                .map_err(|e| TypegenError::Cluster(e.to_string()))?;
            (pg.database_url(), Some(pg))
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TypegenError::Cluster(format!("cannot start the async runtime: {e}")))
        .and_then(|rt| rt.block_on(generate_at(&url, args, embedded.is_some())));
    if let Some(pg) = embedded {
        pg.stop()
            .map_err(|e| TypegenError::Cluster(e.to_string()))?;
    }
    let text = result?;
    match &args.out {
        Some(path) => std::fs::write(path, text).map_err(|source| TypegenError::Write {
            path: path.clone(),
            source,
        }),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

async fn generate_at(
    url: &str,
    args: &GenTypesArgs,
    migrate_first: bool,
) -> Result<String, TypegenError> {
    let settings = DatabaseConfig {
        url: Some(url.to_string()),
        pool_size: 2,
        statement_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        app_migrations: args.app_migrations.clone(),
        migrate_on_start: false,
        ca_file: args.database_ca_file.clone(),
    };
    let store = Store::new(url, &settings)?;
    // The dev database is brought up to date like `rowcast dev` would; a DATABASE_URL is
    // only read (generating types must never migrate a production database).
    if migrate_first {
        let all = migrate::all_migrations(args.app_migrations.as_deref())?;
        migrate::apply(store.pg_config(), &all).await?;
    }
    Ok(generate(&store, &args.schemas).await?)
}

/// Read the catalog of `schemas` and render the TypeScript file.
pub async fn generate(store: &Store, schemas: &[String]) -> Result<String, StoreError> {
    let columns = store.catalog_columns(schemas).await?;
    Ok(render(schemas, &columns))
}

/// The TypeScript type of a column's value as the REST API and realtime send it in JSON.
fn ts_type(c: &CatalogColumn) -> String {
    let base = if !c.enum_labels.is_empty() {
        c.enum_labels
            .iter()
            .map(|l| ts_string(l))
            .collect::<Vec<_>>()
            .join(" | ")
    } else {
        match c.type_name.as_str() {
            "bool" => "boolean",
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "oid" => "number",
            "json" | "jsonb" => "Json",
            "text" | "varchar" | "bpchar" | "char" | "name" | "citext" | "uuid" | "date"
            | "time" | "timetz" | "timestamp" | "timestamptz" | "interval" | "bytea" | "inet"
            | "cidr" | "macaddr" | "money" | "tsvector" | "xml" => "string",
            _ => "unknown",
        }
        .to_string()
    };
    if c.is_array {
        if base.contains('|') {
            format!("({base})[]")
        } else {
            format!("{base}[]")
        }
    } else {
        base
    }
}

/// A JSON string literal is a valid TypeScript string literal.
fn ts_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn ts_key(name: &str) -> String {
    let ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        name.to_string()
    } else {
        ts_string(name)
    }
}

/// Render the file. Columns must come grouped by schema and relation (as the catalog read orders them).
pub fn render(schemas: &[String], columns: &[CatalogColumn]) -> String {
    let mut by_schema: BTreeMap<&str, BTreeMap<&str, Vec<&CatalogColumn>>> = BTreeMap::new();
    for s in schemas {
        by_schema.entry(s.as_str()).or_default();
    }
    for c in columns {
        by_schema
            .entry(&c.schema)
            .or_default()
            .entry(&c.relation)
            .or_default()
            .push(c);
    }
    let mut out = String::new();
    out.push_str(
        "// Generated by `rowcast gen types` from the database schema. Do not edit by hand.\n",
    );
    out.push_str("export type Json = string | number | boolean | null | { [key: string]: Json | undefined } | Json[];\n\n");
    out.push_str("export interface Database {\n");
    for (schema, relations) in &by_schema {
        let _ = writeln!(out, "  {}: {{", ts_key(schema));
        for (section, is_table) in [("Tables", true), ("Views", false)] {
            let _ = writeln!(out, "    {section}: {{");
            for (name, cols) in relations {
                let table = matches!(cols.first().map(|c| c.kind), Some('r' | 'p' | 'f'));
                if table != is_table {
                    continue;
                }
                let _ = writeln!(out, "      {}: {{", ts_key(name));
                let _ = writeln!(out, "        Row: {{");
                for c in cols {
                    let null = if c.not_null { "" } else { " | null" };
                    let _ = writeln!(out, "          {}: {}{null};", ts_key(&c.name), ts_type(c));
                }
                out.push_str("        };\n");
                if is_table {
                    for (part, all_optional) in [("Insert", false), ("Update", true)] {
                        let _ = writeln!(out, "        {part}: {{");
                        for c in cols {
                            // `_v` is the row version Rowcast maintains (docs/capture.md).
                            if c.always_generated || c.name == "_v" {
                                let _ = writeln!(out, "          {}?: never;", ts_key(&c.name));
                                continue;
                            }
                            let optional = all_optional || !c.not_null || c.has_default;
                            let null = if c.not_null { "" } else { " | null" };
                            let q = if optional { "?" } else { "" };
                            let _ = writeln!(
                                out,
                                "          {}{q}: {}{null};",
                                ts_key(&c.name),
                                ts_type(c)
                            );
                        }
                        out.push_str("        };\n");
                    }
                }
                out.push_str("      };\n");
            }
            out.push_str("    };\n");
        }
        out.push_str("  };\n");
    }
    out.push_str("}\n\n");
    out.push_str(
        "/** The row type of a table or view of the `public` schema: `Tables<'todos'>`. */\n",
    );
    out.push_str("export type Tables<T extends keyof (Database['public']['Tables'] & Database['public']['Views'])> =\n");
    out.push_str("  (Database['public']['Tables'] & Database['public']['Views'])[T] extends { Row: infer R } ? R : never;\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, not_null: bool, has_default: bool) -> CatalogColumn {
        CatalogColumn {
            schema: "public".into(),
            relation: "todos".into(),
            kind: 'r',
            name: name.into(),
            type_name: ty.into(),
            is_array: false,
            not_null,
            has_default,
            always_generated: false,
            enum_labels: vec![],
        }
    }

    #[test]
    fn renders_row_insert_and_update() {
        let mut id = col("id", "int8", true, true);
        id.always_generated = true;
        let mut tags = col("tags", "text", true, true);
        tags.is_array = true;
        let mut status = col("status", "mood", false, false);
        status.enum_labels = vec!["ok".into(), "it's \"bad\"".into()];
        let cols = vec![
            id,
            col("title", "text", true, false),
            tags,
            status,
            col("_v", "int8", false, false),
            col("odd name", "jsonb", false, false),
        ];
        let ts = render(&["public".into()], &cols);
        assert!(ts.contains("          id: number;\n"), "{ts}");
        assert!(ts.contains("          tags: string[];\n"), "{ts}");
        assert!(
            ts.contains(r#"          status: "ok" | "it's \"bad\"" | null;"#),
            "{ts}"
        );
        assert!(
            ts.contains("          \"odd name\": Json | null;\n"),
            "{ts}"
        );
        let insert = &ts[ts.find("Insert").unwrap()..ts.find("Update").unwrap()];
        assert!(
            insert.contains("id?: never;") && insert.contains("_v?: never;"),
            "{insert}"
        );
        assert!(insert.contains("          title: string;\n"), "{insert}");
        assert!(insert.contains("          tags?: string[];\n"), "{insert}");
        let update = &ts[ts.find("Update").unwrap()..];
        assert!(update.contains("          title?: string;\n"), "{update}");
    }
}
