//! The database: one code path through sqlx's `Any` driver, so every query is written once and
//! runs on SQLite (the zero-set-up default) and PostgreSQL (for several instances).
//!
//! Rules that keep the SQL portable: `$1`-style placeholders (both drivers accept them), times
//! as integer unix seconds, flags as integers 0/1, binary as `blob`/`bytea`, and ids returned
//! with `returning`. The only dialect-specific part is the migrations folder, chosen at run time.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Which database the service talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (a file in the data folder).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A pool of connections to the service's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
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
            options = options.max_connections(8).after_connect(|conn, _meta| {
                Box::pin(async move {
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
        let pool = options.connect(url).await?;
        Ok(Self { pool, dialect })
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
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("begin immediate").await,
            Dialect::Postgres => self.pool.begin().await,
        }
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

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Reads an optional integer column (NULL becomes `None`).
pub(crate) fn opt_i64(row: &AnyRow, column: &str) -> Result<Option<i64>, sqlx::Error> {
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
