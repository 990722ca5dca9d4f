//! Where timelines are kept: one row per (app, message) in SQLite (embedded,
//! the default) or PostgreSQL, chosen by a URL.
//!
//! A row's `events` is a JSON object mapping step name → time. An upsert
//! merges the new steps into it, new keys winning: `json_patch` in SQLite,
//! JSONB `||` in PostgreSQL. Times of insertion and last update are
//! milliseconds since the Unix epoch. Two windows of one message may be
//! written at once by two store consumers, and the later one may commit
//! first: the row keeps the earlier insertion time and the later update
//! time whatever order they commit in, so `inserted_at <= updated_at`
//! always holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, ToSql, TransactionBehavior};
use serde_json::{Map, Value};
use store_url::{Errors, StoreBase};
use tokio_postgres::{Client, NoTls, Statement};

/// Rows per SQLite statement in a batched upsert (5 parameters each, well
/// under SQLite's 32,766).
const SQLITE_ROWS_PER_STATEMENT: usize = 200;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error, or could not be reached.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The URL or table name is not one this service understands.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The blocking task running a SQLite call panicked or was cancelled.
    #[error("sqlite task failed: {0}")]
    Task(String),
}

/// One message's new steps, to merge into its row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    /// The application.
    pub app_id: i64,
    /// The message.
    pub message_id: i64,
    /// Step name → time, each step once (the latest report of it wins).
    pub events: Vec<(Box<str>, Box<str>)>,
}

impl Upsert {
    /// The steps as the JSON object text stored in the row.
    pub fn events_json(&self) -> String {
        let object: Map<String, Value> = self
            .events
            .iter()
            .map(|(step, at)| (step.to_string(), Value::String(at.to_string())))
            .collect();
        Value::Object(object).to_string()
    }
}

/// A stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The application.
    pub app_id: i64,
    /// The message.
    pub message_id: i64,
    /// Step name → time.
    pub events: Map<String, Value>,
    /// When the row was first written (ms since the epoch).
    pub inserted_at: i64,
    /// When it was last written (ms since the epoch).
    pub updated_at: i64,
}

/// A timeline store: a table in SQLite or PostgreSQL. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Store {
    base: StoreBase<Sqlite, Postgres>,
    transactions: Arc<AtomicU64>,
}

type Backend = store_url::Backend<Sqlite, Postgres>;

impl Store {
    /// Opens the store `url` names and creates `table` if it does not exist.
    ///
    /// `postgres://…` or `postgresql://…` is a PostgreSQL connection string;
    /// `sqlite:PATH` (or `sqlite://PATH`) is a SQLite file, created if needed,
    /// and `sqlite::memory:` an in-memory database. `table` is letters, digits
    /// and `_`, not starting with a digit.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for an unknown URL or a bad table name; the
    /// database's error if it cannot be opened or the table created.
    pub async fn open(url: &str, table: &str) -> Result<Store, StoreError> {
        let errors = Errors {
            config: StoreError::Config,
            task: StoreError::Task,
        };
        Ok(Store {
            base: StoreBase::open(url, table, Sqlite::open, Postgres::open, errors).await?,
            transactions: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        self.base.table()
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        self.base.kind()
    }

    /// Upsert transactions committed since the store was opened.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Merges every upsert into its row, all in one transaction; `now` (ms
    /// since the epoch) is the rows' update time, and the insertion time of
    /// new ones. Each (app, message) may appear once.
    ///
    /// # Errors
    ///
    /// The database's error; then nothing was written.
    pub async fn upsert(&self, rows: Arc<[Upsert]>, now: i64) -> Result<(), StoreError> {
        match &self.base.backend {
            Backend::Sqlite(db) => {
                let db = db.clone();
                blocking(move || db.upsert(&rows, now)).await?;
            }
            Backend::Postgres(db) => db.upsert(&rows, now).await?,
        }
        self.transactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The rows of `message_id` (one per application that reported it).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn message(&self, message_id: i64) -> Result<Vec<Row>, StoreError> {
        self.select(Some(message_id)).await
    }

    /// Every stored row (tests and the self-checks use it).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn all(&self) -> Result<Vec<Row>, StoreError> {
        self.select(None).await
    }

    async fn select(&self, message_id: Option<i64>) -> Result<Vec<Row>, StoreError> {
        let raw = match &self.base.backend {
            Backend::Sqlite(db) => {
                let db = db.clone();
                blocking(move || db.select(message_id)).await?
            }
            Backend::Postgres(db) => db.select(message_id).await?,
        };
        raw.into_iter()
            .map(|(app_id, message_id, events, inserted_at, updated_at)| {
                let events = match serde_json::from_str(&events) {
                    Ok(Value::Object(events)) => events,
                    _ => return Err(StoreError::Config(format!("row {message_id}: bad events"))),
                };
                Ok(Row {
                    app_id,
                    message_id,
                    events,
                    inserted_at,
                    updated_at,
                })
            })
            .collect()
    }

    /// Deletes the rows last updated before `cutoff` (ms since the epoch);
    /// returns how many.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn delete_older_than(&self, cutoff: i64) -> Result<u64, StoreError> {
        match &self.base.backend {
            Backend::Sqlite(db) => {
                let db = db.clone();
                blocking(move || db.delete_older_than(cutoff)).await
            }
            Backend::Postgres(db) => db.delete_older_than(cutoff).await,
        }
    }

    /// Runs SQL of your own (tests use it to empty or drop their tables).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        match &self.base.backend {
            Backend::Sqlite(db) => {
                let (db, sql) = (db.clone(), sql.to_owned());
                blocking(move || Ok(db.conn.lock().execute_batch(&sql)?)).await
            }
            Backend::Postgres(db) => {
                let conn = db.conn.lock().await;
                conn.client.batch_execute(sql).await?;
                Ok(())
            }
        }
    }
}

type RawRow = (i64, i64, String, i64, i64);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    store_url::blocking(f, StoreError::Task).await
}

/// One SQLite connection (SQLite runs one writer at a time anyway), opened by
/// [`store_url::open_sqlite`].
#[derive(Debug)]
struct Sqlite {
    conn: parking_lot::Mutex<Connection>,
    table: String,
}

impl Sqlite {
    fn open(path: &str, table: &str) -> Result<Sqlite, StoreError> {
        // The key starts with message_id: the live timeline looks rows up by
        // message alone. The retention job scans by update time.
        let schema = format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
               message_id INTEGER NOT NULL, app_id INTEGER NOT NULL, events TEXT NOT NULL, \
               inserted_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, \
               PRIMARY KEY (message_id, app_id)) WITHOUT ROWID; \
             CREATE INDEX IF NOT EXISTS {table}_updated_at ON {table} (updated_at);"
        );
        Ok(Sqlite {
            conn: parking_lot::Mutex::new(store_url::open_sqlite(path, &schema)?),
            table: table.to_owned(),
        })
    }

    fn upsert(&self, rows: &[Upsert], now: i64) -> Result<(), StoreError> {
        let texts: Vec<String> = rows.iter().map(Upsert::events_json).collect();
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (chunk, texts) in rows
            .chunks(SQLITE_ROWS_PER_STATEMENT)
            .zip(texts.chunks(SQLITE_ROWS_PER_STATEMENT))
        {
            let placeholders = vec!["(?,?,?,?,?)"; chunk.len()].join(",");
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO {t} (message_id, app_id, events, inserted_at, updated_at) \
                 VALUES {placeholders} ON CONFLICT(message_id, app_id) DO UPDATE SET \
                 events = json_patch({t}.events, excluded.events), \
                 inserted_at = MIN({t}.inserted_at, excluded.inserted_at), \
                 updated_at = MAX({t}.updated_at, excluded.updated_at)",
                t = self.table
            ))?;
            let mut params: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 5);
            for (row, text) in chunk.iter().zip(texts) {
                params.extend([&row.message_id as &dyn ToSql, &row.app_id, text, &now, &now]);
            }
            stmt.execute(params.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn select(&self, message_id: Option<i64>) -> Result<Vec<RawRow>, StoreError> {
        let conn = self.conn.lock();
        let columns = "app_id, message_id, events, inserted_at, updated_at";
        let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<RawRow> {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        };
        let rows = match message_id {
            Some(id) => conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM {} WHERE message_id = ?1 ORDER BY app_id",
                    self.table
                ))?
                .query_map([id], read)?
                .collect::<Result<_, _>>()?,
            None => conn
                .prepare_cached(&format!("SELECT {columns} FROM {}", self.table))?
                .query_map([], read)?
                .collect::<Result<_, _>>()?,
        };
        Ok(rows)
    }

    fn delete_older_than(&self, cutoff: i64) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        let n = conn
            .prepare_cached(&format!("DELETE FROM {} WHERE updated_at < ?1", self.table))?
            .execute([cutoff])?;
        Ok(n as u64)
    }
}

/// One PostgreSQL connection with its upsert prepared; reopened on its next
/// use when found closed (the server went away). The pipeline's store
/// consumers write batches one after another through it; each batch is a
/// single statement, so one connection keeps up.
struct Postgres {
    url: String,
    table: String,
    conn: tokio::sync::Mutex<PgConn>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

struct PgConn {
    client: Client,
    upsert: Statement,
}

impl Postgres {
    async fn open(url: &str, table: &str) -> Result<Postgres, StoreError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                   message_id BIGINT NOT NULL, app_id BIGINT NOT NULL, events JSONB NOT NULL, \
                   inserted_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
                   PRIMARY KEY (message_id, app_id)); \
                 CREATE INDEX IF NOT EXISTS {table}_updated_at ON {table} (updated_at);"
            ))
            .await?;
        drop(client);
        let conn = Self::connect(url, table).await?;
        Ok(Postgres {
            url: url.to_owned(),
            table: table.to_owned(),
            conn: tokio::sync::Mutex::new(conn),
        })
    }

    async fn connect(url: &str, t: &str) -> Result<PgConn, StoreError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "postgres connection closed");
            }
        });
        let upsert = client
            .prepare(&format!(
                "INSERT INTO {t} AS r (message_id, app_id, events, inserted_at, updated_at) \
                 SELECT m, a, e::jsonb, $4, $4 \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS u(m, a, e) \
                 ON CONFLICT (message_id, app_id) DO UPDATE SET \
                 events = r.events || excluded.events, \
                 inserted_at = LEAST(r.inserted_at, excluded.inserted_at), \
                 updated_at = GREATEST(r.updated_at, excluded.updated_at)"
            ))
            .await?;
        Ok(PgConn { client, upsert })
    }

    async fn conn(&self) -> Result<tokio::sync::MutexGuard<'_, PgConn>, StoreError> {
        let mut conn = self.conn.lock().await;
        if conn.client.is_closed() {
            *conn = Self::connect(&self.url, &self.table).await?;
        }
        Ok(conn)
    }

    async fn upsert(&self, rows: &[Upsert], now: i64) -> Result<(), StoreError> {
        let messages: Vec<i64> = rows.iter().map(|row| row.message_id).collect();
        let apps: Vec<i64> = rows.iter().map(|row| row.app_id).collect();
        let events: Vec<String> = rows.iter().map(Upsert::events_json).collect();
        let conn = self.conn().await?;
        conn.client
            .execute(&conn.upsert, &[&messages, &apps, &events, &now])
            .await?;
        Ok(())
    }

    async fn select(&self, message_id: Option<i64>) -> Result<Vec<RawRow>, StoreError> {
        let columns = "app_id, message_id, events::text, inserted_at, updated_at";
        let conn = self.conn().await?;
        let rows = match message_id {
            Some(id) => {
                conn.client
                    .query(
                        &format!(
                            "SELECT {columns} FROM {} WHERE message_id = $1 ORDER BY app_id",
                            self.table
                        ),
                        &[&id],
                    )
                    .await?
            }
            None => {
                conn.client
                    .query(&format!("SELECT {columns} FROM {}", self.table), &[])
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
            .collect())
    }

    async fn delete_older_than(&self, cutoff: i64) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        Ok(conn
            .client
            .execute(
                &format!("DELETE FROM {} WHERE updated_at < $1", self.table),
                &[&cutoff],
            )
            .await?)
    }
}
