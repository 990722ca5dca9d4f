//! Where counters are kept for good: SQLite (embedded, the default) or
//! PostgreSQL, chosen by a URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior};
use store_url::{Errors, StoreBase};
use tokio_postgres::{Client, NoTls, Statement};

/// How many PostgreSQL connections a store keeps (the synchronous mode's
/// requests share them; the write-behind pipeline needs one).
const PG_CONNECTIONS: usize = 16;

/// Rows per SQLite statement in a batched upsert (2 parameters each, well
/// under SQLite's 32,766).
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

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
    /// A read-add-write would take a counter past `i64`'s range.
    #[error("counter would overflow")]
    Overflow,
    /// The URL or table name is not one this service understands.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The blocking task running a SQLite call panicked or was cancelled.
    #[error("sqlite task failed: {0}")]
    Task(String),
}

/// A counter store: a table `(key TEXT PRIMARY KEY, value BIGINT)` in SQLite
/// or PostgreSQL. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Store {
    base: StoreBase<Sqlite, Postgres>,
    rows_written: Arc<AtomicU64>,
}

type Backend = store_url::Backend<Sqlite, Postgres>;

impl Store {
    /// Opens the store `url` names and creates `table` if it does not exist.
    ///
    /// `postgres://…` or `postgresql://…` is a PostgreSQL connection string;
    /// `sqlite:PATH` (or `sqlite://PATH`) is a SQLite file, created if needed.
    /// `table` is letters, digits and `_`.
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
            rows_written: Arc::new(AtomicU64::new(0)),
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

    /// Rows this store has written (upserted or incremented) since it was opened.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }

    /// Every stored counter.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn load(&self) -> Result<Vec<(String, i64)>, StoreError> {
        match &self.base.backend {
            Backend::Sqlite(db) => {
                let db = db.clone();
                blocking(move || db.load()).await
            }
            Backend::Postgres(db) => db.load().await,
        }
    }

    /// Every stored counter, by key.
    ///
    /// # Errors
    ///
    /// As [`Store::load`].
    pub async fn load_map(&self) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        Ok(self.load().await?.into_iter().collect())
    }

    /// `key`'s stored value, 0 if it has none.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn get(&self, key: &str) -> Result<i64, StoreError> {
        match &self.base.backend {
            Backend::Sqlite(db) => {
                let (db, key) = (db.clone(), key.to_owned());
                blocking(move || db.get(&key)).await
            }
            Backend::Postgres(db) => db.get(key).await,
        }
    }

    /// Writes absolute values, one batched upsert (`INSERT … ON CONFLICT(key)
    /// DO UPDATE SET value = excluded.value`) in one transaction.
    ///
    /// # Errors
    ///
    /// The database's error; then nothing was written.
    pub async fn upsert(&self, rows: Arc<[(String, i64)]>) -> Result<(), StoreError> {
        let n = rows.len() as u64;
        match &self.base.backend {
            Backend::Sqlite(db) => {
                let db = db.clone();
                blocking(move || db.upsert(&rows)).await?;
            }
            Backend::Postgres(db) => db.upsert(&rows).await?,
        }
        self.rows_written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// The synchronous design: in one transaction, reads `key`'s value, adds
    /// `delta` and writes the sum back; returns the sum.
    ///
    /// # Errors
    ///
    /// [`StoreError::Overflow`] if the sum leaves `i64`'s range (nothing is
    /// written); the database's error.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let value = match &self.base.backend {
            Backend::Sqlite(db) => {
                let (db, key) = (db.clone(), key.to_owned());
                blocking(move || db.increment(&key, delta)).await?
            }
            Backend::Postgres(db) => db.increment(key, delta).await?,
        };
        self.rows_written.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    /// Runs one SQL statement of your own (tests use it to take the table away
    /// and give it back, as an outage would).
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
                // A connection of its own: the pool's prepare statements on
                // the table when they connect, which fails while it is away.
                let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(sql).await?;
                Ok(())
            }
        }
    }
}

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
        // WITHOUT ROWID: the key's B-tree is the table, so an upsert touches
        // one tree, not a row tree and an index.
        let schema = format!(
            "CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value BIGINT NOT NULL) \
             WITHOUT ROWID"
        );
        Ok(Sqlite {
            conn: parking_lot::Mutex::new(store_url::open_sqlite(path, &schema)?),
            table: table.to_owned(),
        })
    }

    fn load(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&format!("SELECT key, value FROM {}", self.table))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn get(&self, key: &str) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT value FROM {} WHERE key = ?1", self.table))?;
        Ok(stmt
            .query_row([key], |row| row.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn upsert(&self, rows: &[(String, i64)]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
            let placeholders = vec!["(?,?)"; chunk.len()].join(",");
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO {} (key, value) VALUES {placeholders} \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                self.table
            ))?;
            let params: Vec<&dyn ToSql> = chunk
                .iter()
                .flat_map(|(key, value)| [key as &dyn ToSql, value as &dyn ToSql])
                .collect();
            stmt.execute(params.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx
            .prepare_cached(&format!("SELECT value FROM {} WHERE key = ?1", self.table))?
            .query_row([key], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        let value = current.checked_add(delta).ok_or(StoreError::Overflow)?;
        tx.prepare_cached(&format!(
            "INSERT INTO {} (key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            self.table
        ))?
        .execute(rusqlite::params![key, value])?;
        tx.commit()?;
        Ok(value)
    }
}

/// A small pool of PostgreSQL connections, each with its statements prepared;
/// a connection found closed (the server went away) is opened again on its
/// next use.
struct Postgres {
    url: String,
    table: String,
    conns: Vec<tokio::sync::Mutex<Option<PgConn>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("table", &self.table)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

struct PgConn {
    client: Client,
    select: Statement,
    select_for_update: Statement,
    update: Statement,
    insert_add: Statement,
    upsert: Statement,
}

impl Postgres {
    async fn open(url: &str, table: &str) -> Result<Postgres, StoreError> {
        let db = Postgres {
            url: url.to_owned(),
            table: table.to_owned(),
            conns: (0..PG_CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        };
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)"
            ))
            .await?;
        Ok(db)
    }

    async fn connect(&self) -> Result<PgConn, StoreError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "postgres connection closed");
            }
        });
        let t = &self.table;
        Ok(PgConn {
            select: client
                .prepare(&format!("SELECT value FROM {t} WHERE key = $1"))
                .await?,
            select_for_update: client
                .prepare(&format!("SELECT value FROM {t} WHERE key = $1 FOR UPDATE"))
                .await?,
            update: client
                .prepare(&format!("UPDATE {t} SET value = $2 WHERE key = $1"))
                .await?,
            // A key nobody has yet: two requests may race to create it, so the
            // loser adds to the winner's row instead of overwriting it.
            insert_add: client
                .prepare(&format!(
                    "INSERT INTO {t} AS c (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value \
                     RETURNING value"
                ))
                .await?,
            upsert: client
                .prepare(&format!(
                    "INSERT INTO {t} (key, value) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ))
                .await?,
            client,
        })
    }

    /// The next connection of the pool (round robin), opened if needed.
    async fn conn(&self) -> Result<tokio::sync::MappedMutexGuard<'_, PgConn>, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        if slot.as_ref().is_none_or(|conn| conn.client.is_closed()) {
            *slot = None;
            *slot = Some(self.connect().await?);
        }
        Ok(tokio::sync::MutexGuard::map(slot, |slot| {
            slot.as_mut().expect("connected above")
        }))
    }

    async fn load(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .client
            .query(&format!("SELECT key, value FROM {}", self.table), &[])
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn get(&self, key: &str) -> Result<i64, StoreError> {
        let conn = self.conn().await?;
        let row = conn.client.query_opt(&conn.select, &[&key]).await?;
        Ok(row.map_or(0, |row| row.get(0)))
    }

    async fn upsert(&self, rows: &[(String, i64)]) -> Result<(), StoreError> {
        let keys: Vec<&str> = rows.iter().map(|(key, _)| key.as_str()).collect();
        let values: Vec<i64> = rows.iter().map(|(_, value)| *value).collect();
        let conn = self.conn().await?;
        conn.client.execute(&conn.upsert, &[&keys, &values]).await?;
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let conn = &mut *conn;
        let tx = conn.client.transaction().await?;
        let value = match tx.query_opt(&conn.select_for_update, &[&key]).await? {
            Some(row) => {
                let current: i64 = row.get(0);
                let value = current.checked_add(delta).ok_or(StoreError::Overflow)?;
                tx.execute(&conn.update, &[&key, &value]).await?;
                value
            }
            None => tx
                .query_one(&conn.insert_add, &[&key, &delta])
                .await?
                .get(0),
        };
        tx.commit().await?;
        Ok(value)
    }
}
