//! What the service examples (`examples/counters`, `examples/timeline`)
//! share about their stores, so that each keeps only its own SQL:
//!
//! - [`Database::parse`]: which database a URL names (`sqlite:PATH` or
//!   `postgres://…`), and whether a table name is safe to put into SQL;
//! - [`blocking`]: a SQLite call on tokio's blocking threads;
//! - [`test_urls`]: the databases a test runs against — a fresh SQLite file,
//!   and the PostgreSQL on 127.0.0.1:5432 when it answers (required when
//!   `CI=true`).
//!
//! ```
//! use store_url::Database;
//!
//! assert_eq!(Database::parse("sqlite:/tmp/x.db", "rows"), Ok(Database::Sqlite("/tmp/x.db")));
//! assert_eq!(Database::parse("sqlite:///tmp/x.db", "rows"), Ok(Database::Sqlite("/tmp/x.db")));
//! assert!(matches!(Database::parse("postgresql://db/test", "rows"), Ok(Database::Postgres(_))));
//! assert!(Database::parse("sqlite:x.db", "rows; DROP TABLE x").is_err());
//! assert!(Database::parse("mysql://db", "rows").is_err());
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// The PostgreSQL the tests, self-tests and benches use when `DATABASE_URL`
/// names none (trust auth, database `test`).
pub const DEFAULT_POSTGRES: &str = "postgresql://postgres@127.0.0.1:5432/test";

/// The database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Database<'a> {
    /// A SQLite file (created if needed), or `:memory:`.
    Sqlite(&'a str),
    /// A PostgreSQL connection string.
    Postgres(&'a str),
}

impl<'a> Database<'a> {
    /// Reads `url` — `postgres://…` or `postgresql://…`, `sqlite:PATH` or
    /// `sqlite://PATH` — and checks `table`: letters, digits and `_`, not
    /// starting with a digit, so that it can be spliced into SQL.
    ///
    /// # Errors
    ///
    /// What is wrong with the URL or the table name.
    pub fn parse(url: &'a str, table: &str) -> Result<Database<'a>, String> {
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || table.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!("bad table name {table:?}"));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(url))
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Ok(Database::Sqlite(path.strip_prefix("//").unwrap_or(path)))
        } else {
            Err(format!(
                "unknown database URL {url:?} (want sqlite:PATH or postgres://…)"
            ))
        }
    }
}

/// Runs `f` (a SQLite call: it blocks) on tokio's blocking threads.
///
/// # Errors
///
/// `f`'s error, or `task(…)` of the reason when the task panicked or was
/// cancelled.
pub async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    task: impl FnOnce(String) -> E,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|error| Err(task(error.to_string())))
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The database URLs a test runs against: a fresh SQLite file in a
/// directory named after `prefix` and the process, and PostgreSQL
/// (`DATABASE_URL`, or [`DEFAULT_POSTGRES`]) when it answers. If it does
/// not, the PostgreSQL half is skipped with a printed reason, unless
/// `CI=true`, where that panics.
///
/// # Panics
///
/// With `CI=true` and PostgreSQL unreachable; when the directory cannot be
/// created.
pub async fn test_urls(prefix: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut urls = vec![format!(
        "sqlite:{}",
        dir.join(format!("db{n}.sqlite")).display()
    )];
    let postgres = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
    match tokio_postgres::connect(&postgres, tokio_postgres::NoTls).await {
        Ok(_) => urls.push(postgres),
        Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and PostgreSQL is unreachable at {postgres}: {error}")
        }
        Err(error) => eprintln!("skipping PostgreSQL: unreachable at {postgres}: {error}"),
    }
    urls
}
