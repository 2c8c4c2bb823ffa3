//! The database: one code path through sqlx's `Any` driver, so every query is written once and
//! runs on SQLite (the zero-set-up default) and PostgreSQL (for several instances).
//!
//! Rules that keep the SQL portable: `$1`-style placeholders (both drivers accept them), times
//! as integer unix seconds, flags as integers 0/1, binary as `blob`/`bytea`, and ids returned
//! with `returning`. The only dialect-specific part is the migrations folder, chosen at run time.

use safehand_crypto::audit_chain::AuditKey;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::Arc;

/// Which database the service talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (a file in the data folder).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A pool of connections to the service's database, and the audit key that the audit log's
/// records are MACed and its heads signed with ([`crate::audit`]).
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    audit_key: Option<Arc<AuditKey>>,
    /// SQLite: this process's writers queue here for the database's one write lock (see
    /// [`Db::begin`]).
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// How long a writer waits for SQLite's write lock (here, then in SQLite's busy handler)
/// before giving up with a "busy" error.
const SQLITE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A transaction that writes ([`Db::begin`]). It derefs to the connection, so queries take
/// `&mut *tx` and helpers taking `&mut AnyConnection` take `&mut tx`; the audit log appends
/// through it with the audit key it carries.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    audit_key: Option<Arc<AuditKey>>,
    /// Held until the transaction ends (declared after `inner`, so dropped after it).
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tx")
    }
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Rolls the transaction back (dropping it does the same).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }

    /// The audit key, when the service has loaded one.
    pub(crate) fn audit_key(&self) -> Option<&AuditKey> {
        self.audit_key.as_deref()
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`).
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(sqlx::Error::Configuration(
                "the database URL must start with sqlite: or postgres:".into(),
            ));
        };
        let mut options = AnyPoolOptions::new();
        if dialect == Dialect::Sqlite {
            // WAL lets readers continue while one writer commits; the busy timeout makes
            // concurrent writers wait for each other instead of failing at once.
            // secure_delete zeroes deleted rows and freed pages, so a shredded header leaves
            // no bytes in the file (the WAL is truncated after a shred: `checkpoint_wal`).
            options = options.max_connections(8).after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("pragma secure_delete = on")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("pragma journal_mode = wal")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("pragma busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("pragma foreign_keys = on")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("pragma synchronous = normal")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        // A connection must come back to the pool with no transaction open. If a transaction's
        // rollback failed (or a cancelled commit left it open), the connection would hold the
        // database's write lock for ever: every other writer then fails ("database is
        // locked") and the next `begin` on it is refused (InvalidSavePointStatement), so the
        // whole service fails until a restart. Such a connection is closed instead (closing
        // it rolls the transaction back). The ping first runs any rollback a dropped
        // transaction queued, so only a transaction that is truly still open counts.
        options = options.after_release(|conn, _meta| {
            Box::pin(async move {
                sqlx::Connection::ping(&mut *conn).await?;
                let open = sqlx::Connection::is_in_transaction(&*conn);
                if open {
                    tracing::warn!(
                        "a database connection came back with a transaction still open; closing it so that it cannot hold the database's lock"
                    );
                }
                Ok(!open)
            })
        });
        let pool = options.connect(url).await?;
        Ok(Self {
            pool,
            dialect,
            audit_key: None,
            write_gate: Arc::default(),
        })
    }

    /// This database with the audit key its audit log is kept under. Every handle that
    /// appends to or checks the log needs it ([`crate::audit`]).
    pub fn with_audit_key(mut self, key: AuditKey) -> Self {
        self.audit_key = Some(Arc::new(key));
        self
    }

    /// This database with the audit key `other` holds (another pool on the same database,
    /// as a second instance has).
    pub fn with_audit_key_of(mut self, other: &Db) -> Self {
        self.audit_key = other.audit_key.clone();
        self
    }

    /// The audit key, when loaded.
    pub fn audit_key(&self) -> Option<&AuditKey> {
        self.audit_key.as_deref()
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await,
        }
    }

    /// Begins a transaction that writes. On SQLite it takes the write lock at once
    /// (`begin immediate`), so a transaction that reads before it writes cannot fail half-way
    /// because another writer committed in between; PostgreSQL uses row locks as usual.
    ///
    /// On SQLite this process's writers first queue, in order, on an in-process gate held for
    /// the transaction's life. Without it, writers that find the lock taken sleep in SQLite's
    /// busy handler (1, 2, 5, ... up to 100 ms at a time) and miss the moment it is free: four
    /// API clients at once, each request writing its audit record, had a p99 of 500 ms against
    /// 8 ms for one. The busy handler still covers other processes (the admin commands).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let (inner, gate) = match self.dialect {
            Dialect::Sqlite => {
                let gate =
                    tokio::time::timeout(SQLITE_WRITE_WAIT, self.write_gate.clone().lock_owned())
                        .await
                        .map_err(|_| sqlx::Error::PoolTimedOut)?;
                (self.pool.begin_with("begin immediate").await?, Some(gate))
            }
            Dialect::Postgres => (self.pool.begin().await?, None),
        };
        Ok(Tx {
            inner,
            audit_key: self.audit_key.clone(),
            _gate: gate,
        })
    }

    /// The connection pool, for the domain modules' queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("select 1").fetch_one(&self.pool).await.is_ok()
    }

    /// After a shred (or an erased mail body) has committed, on SQLite: copies the WAL into
    /// the database file (where secure_delete has zeroed the freed bytes) and truncates it, so
    /// old page versions holding the header are gone. Best effort: when readers or writers keep
    /// it busy it is logged and the sweeper's next pass ([`Db::erase_freed_space`]) catches up.
    /// Returns whether the WAL is now empty (always true on PostgreSQL, where nothing is done
    /// here). Never fails.
    pub async fn checkpoint_wal(&self) -> bool {
        if self.dialect != Dialect::Sqlite {
            return true;
        }
        match sqlx::query("pragma wal_checkpoint(truncate)")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>(0))
        {
            Ok(0) => true,
            Ok(_) => {
                tracing::warn!("the database was busy: the WAL could not be truncated after a shred; the sweeper will retry");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not truncate the WAL after a shred; the sweeper will retry");
                false
            }
        }
    }

    /// Records, in the caller's transaction, that freed space now holds shredded key material
    /// and must be rewritten ([`Db::erase_freed_space`]).
    /// On PostgreSQL it also keeps the youngest shred's transaction id, so the rewrite waits
    /// for every snapshot that could still see the deleted rows.
    pub(crate) async fn erasure_due_in(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
        let sql = if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            "insert into erasure_due (what, generation, shred_xid) values ('shred', 1, txid_current()) \
             on conflict (what) do update set generation = erasure_due.generation + 1, \
             shred_xid = greatest(erasure_due.shred_xid, excluded.shred_xid)"
        } else {
            "insert into erasure_due (what, generation) values ('shred', 1) \
             on conflict (what) do update set generation = erasure_due.generation + 1"
        };
        sqlx::query(sql).execute(conn).await?;
        Ok(())
    }

    /// The sweeper's part of crypto-shredding, each pass. SQLite: [`Db::checkpoint_wal`].
    /// PostgreSQL: when a shred happened since the last rewrite, `vacuum full` of the tables
    /// that held key material or recipient links and codes (`transfer_keys`,
    /// `recipient_sessions`, `recipient_codes`, `mail_outbox`): each is copied into a new file
    /// without the dead row versions and the old file is unlinked (plain VACUUM only marks the
    /// space free; the bytes would stay). It waits at most 5 s for its lock, so a busy moment
    /// is retried next pass. Returns whether nothing is left to rewrite.
    pub async fn erase_freed_space(&self) -> Result<bool, sqlx::Error> {
        if self.dialect == Dialect::Sqlite {
            return Ok(self.checkpoint_wal().await);
        }
        let Some(row) =
            sqlx::query("select generation, shred_xid from erasure_due where what = 'shred'")
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(true);
        };
        let generation: i64 = row.try_get("generation")?;
        // vacuum (full) copies a deleted row version that any open snapshot of this database
        // could still see ("recently dead") into the new file: while a transaction or snapshot
        // from before the shred is open, rewriting would leave the keys on disk and call it done.
        let shred_xid = opt_i64(&row, "shred_xid")?;
        let older = sqlx::query(
            "select pid, coalesce(application_name, '') as app, \
             coalesce(to_char(xact_start, 'YYYY-MM-DD HH24:MI:SS'), '') as since \
             from pg_stat_activity \
             where datname = current_database() and pid <> pg_backend_pid() \
             and ((backend_xmin is not null and age(backend_xmin) >= age((coalesce($1::bigint, txid_current()) % 4294967296)::text::xid)) \
               or (backend_xid is not null and age(backend_xid) >= age((coalesce($1::bigint, txid_current()) % 4294967296)::text::xid))) \
             order by xact_start limit 1",
        )
        .bind(shred_xid)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(older) = older {
            let pid: i32 = older.try_get("pid")?;
            let app: String = older.try_get("app")?;
            let since: String = older.try_get("since")?;
            tracing::info!(
                pid,
                application = %app,
                transaction_since = %since,
                "a transaction older than the last shred is open in the database; the rewrite of freed space waits for it (the sweeper retries every minute)"
            );
            return Ok(false);
        }
        // A transaction in any database of the cluster that began before the shred and is
        // still running keeps the xmin of every new snapshot (the vacuum's own included) at
        // or below the shred's: the vacuum would then still see the deleted rows as recently
        // dead and copy them. (pg_stat_activity above looks at this database only, and shows
        // other roles' transaction ids to privileged roles only; a fresh snapshot's xmin is
        // the oldest transaction running anywhere.) Seen as a rare failure of the shredding
        // test while other tests' databases were busy on the same server.
        let oldest_running: i64 =
            sqlx::query("select txid_snapshot_xmin(txid_current_snapshot())::bigint as xmin")
                .fetch_one(&self.pool)
                .await?
                .try_get("xmin")?;
        if shred_xid.is_some_and(|shred| oldest_running <= shred) {
            tracing::info!(
                oldest_running,
                "a transaction that began before the last shred is still running on the database server; the rewrite of freed space waits for it (the sweeper retries every minute)"
            );
            return Ok(false);
        }
        // One connection for the session setting; vacuum cannot run inside a transaction.
        let mut conn = self.pool.acquire().await?;
        sqlx::query("set lock_timeout = '5s'")
            .execute(&mut *conn)
            .await?;
        let vacuumed = sqlx::query(
            "vacuum (full) transfer_keys, recipient_sessions, recipient_codes, mail_outbox",
        )
        .execute(&mut *conn)
        .await;
        sqlx::query("reset lock_timeout")
            .execute(&mut *conn)
            .await?;
        drop(conn);
        if let Err(e) = vacuumed {
            tracing::warn!(error = %e, "could not rewrite the tables that held shredded keys; the sweeper will retry");
            return Ok(false);
        }
        // A shred that committed meanwhile raised the generation: it stays due.
        sqlx::query("delete from erasure_due where what = 'shred' and generation = $1")
            .bind(generation)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Reads an optional integer column (NULL becomes `None`).
pub fn opt_i64(row: &AnyRow, column: &str) -> Result<Option<i64>, sqlx::Error> {
    row.try_get::<Option<i64>, _>(column)
}

/// Whether an error is a unique-constraint violation (a lost race to insert).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation()
                || d.message().contains("UNIQUE constraint failed")
                || d.code().as_deref() == Some("23505")
        }
        _ => false,
    }
}
