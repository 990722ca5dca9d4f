//! What the service examples (`examples/counters`, `examples/timeline`)
//! share about their stores, so that each keeps only its own SQL:
//!
//! - [`Database::parse`]: which database a URL names (`sqlite:PATH` or
//!   `postgres://…`), and whether a table name is safe to put into SQL;
//! - [`StoreBase`]: a store's skeleton — its table and its [`Backend`], the
//!   SQLite or the PostgreSQL side, opened from the URL — so that a store
//!   writes only its two sides;
//! - [`open_sqlite`]: a SQLite file set up the way both services want it;
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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

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

/// How a store's error type says what the shared skeleton can find wrong:
/// a URL or table it refuses (`config`), and a SQLite task that panicked or
/// was cancelled (`task`).
#[derive(Clone, Copy, Debug)]
pub struct Errors<E> {
    /// The configuration is wrong (the message says how).
    pub config: fn(String) -> E,
    /// The blocking task running a SQLite call failed (the message says how).
    pub task: fn(String) -> E,
}

/// The database behind a store: its SQLite side `S` or its PostgreSQL side
/// `P`, chosen by a URL. Each side is behind an `Arc`, so that cloning the
/// store shares it; a store matches on the two to run its own SQL.
#[derive(Debug)]
pub enum Backend<S, P> {
    /// A SQLite file.
    Sqlite(Arc<S>),
    /// A PostgreSQL database.
    Postgres(Arc<P>),
}

impl<S, P> Clone for Backend<S, P> {
    fn clone(&self) -> Self {
        match self {
            Backend::Sqlite(db) => Backend::Sqlite(db.clone()),
            Backend::Postgres(db) => Backend::Postgres(db.clone()),
        }
    }
}

impl<S, P> Backend<S, P> {
    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// A store's skeleton: the database its URL names ([`Backend`]) and the
/// table it keeps there. Cloning shares the database.
#[derive(Debug)]
pub struct StoreBase<S, P> {
    /// The database; a store matches on it to run its own SQL.
    pub backend: Backend<S, P>,
    table: Arc<str>,
}

impl<S, P> Clone for StoreBase<S, P> {
    fn clone(&self) -> Self {
        StoreBase {
            backend: self.backend.clone(),
            table: self.table.clone(),
        }
    }
}

impl<S: Send + Sync + 'static, P> StoreBase<S, P> {
    /// Opens the database `url` names for `table` (see [`Database::parse`]):
    /// `sqlite(path, table)` on the blocking threads, or `postgres(url,
    /// table)`; each creates the table if it does not exist.
    ///
    /// # Errors
    ///
    /// `errors.config` for an unknown URL or a bad table name; the side's own
    /// error when it cannot open.
    pub async fn open<'a, E, F>(
        url: &'a str,
        table: &'a str,
        sqlite: fn(&str, &str) -> Result<S, E>,
        postgres: impl FnOnce(&'a str, &'a str) -> F,
        errors: Errors<E>,
    ) -> Result<Self, E>
    where
        E: Send + 'static,
        F: Future<Output = Result<P, E>>,
    {
        let backend = match Database::parse(url, table).map_err(errors.config)? {
            Database::Postgres(url) => Backend::Postgres(Arc::new(postgres(url, table).await?)),
            Database::Sqlite(path) => {
                let (path, owned) = (path.to_owned(), table.to_owned());
                let open = move || sqlite(&path, &owned);
                Backend::Sqlite(Arc::new(blocking(open, errors.task).await?))
            }
        };
        Ok(StoreBase {
            backend,
            table: table.into(),
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }
}

/// Opens (or creates) the SQLite file at `path` the way the stores want it:
/// WAL mode with `synchronous = NORMAL` and a 5 s busy timeout; then runs
/// `schema`, the SQL that creates the store's tables if they do not exist.
///
/// # Errors
///
/// SQLite's error.
pub fn open_sqlite(path: &str, schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(schema)?;
    Ok(conn)
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
