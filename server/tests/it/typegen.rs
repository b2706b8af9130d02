//! `rowcast gen types` against a real database: the binary reads the catalog and prints the
//! TypeScript `Database` shape the SDK's generics use.

use crate::support;

#[tokio::test]
async fn gen_types_prints_row_insert_and_update_types_of_the_schema() {
    let url = support::migrated_db().await;
    let db = support::connect(&url).await;
    db.batch_execute(
        "create type public.mood as enum ('happy', 'sad');
         create table public.todos (
           id bigint generated always as identity primary key,
           title text not null,
           note text,
           done boolean not null default false,
           tags text[] not null default '{}',
           mood public.mood,
           meta jsonb,
           \"Odd Name\" int
         );
         select rowcast.enable_sync('public.todos');
         create view public.open_todos as select id, title from public.todos where not done;
         create table public.hidden_elsewhere (id int primary key);
         alter table public.hidden_elsewhere set schema rowcast;",
    )
    .await
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args(["gen", "types", "--database-url", &url])
        .env_remove("ROWCAST_REST_SCHEMAS")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gen types failed: {stderr}");
    let ts = String::from_utf8(out.stdout).unwrap();
    let section = |from: &str, to: &str| -> String {
        let start = ts
            .find(from)
            .unwrap_or_else(|| panic!("no {from} in:\n{ts}"));
        let rest = &ts[start..];
        rest[..rest.find(to).unwrap_or(rest.len())].to_string()
    };
    let row = section("      todos: {\n        Row: {", "Insert");
    for line in [
        "id: number;",
        "title: string;",
        "note: string | null;",
        "done: boolean;",
        "tags: string[];",
        "mood: \"happy\" | \"sad\" | null;",
        "meta: Json | null;",
        "\"Odd Name\": number | null;",
        "_v: number | null;",
    ] {
        assert!(row.contains(line), "Row lacks {line}:\n{row}");
    }
    let insert = section("      todos: {\n        Row: {", "Update");
    let insert = &insert[insert.find("Insert").unwrap()..];
    for line in [
        "id?: never;",
        "_v?: never;",
        "title: string;",
        "note?: string | null;",
        "done?: boolean;",
    ] {
        assert!(insert.contains(line), "Insert lacks {line}:\n{insert}");
    }
    let update = section("        Update: {", "};");
    assert!(update.contains("title?: string;"), "{update}");
    let views = section("    Views: {", "  };\n}");
    assert!(
        views.contains("open_todos: {") && views.contains("title: string | null;"),
        "{views}"
    );
    assert!(
        !ts.contains("hidden_elsewhere"),
        "only the asked schemas:\n{ts}"
    );

    // A database that cannot be reached is a clear error, not a panic.
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args([
            "gen",
            "types",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("rowcast gen types: "));
}
