//! Seeds a server's database for tests/bench/transfers: a staff member (who may also manage
//! contacts) with an API token, and a verified contact. Prints `TOKEN CONTACT_ID`.
//!
//!   cargo run --release --example bench-seed -- DATABASE_URL AUDIT_KEY_FILE

use safehand_server::accounts::{self, Role};
use safehand_server::audit::Actor;
use safehand_server::contacts::{self, ContactInput, VerificationInput};
use safehand_server::db::Db;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench-seed DATABASE_URL AUDIT_KEY_FILE"))?;
    let audit_key_file = std::env::args()
        .nth(2)
        .ok_or_else(|| anyhow::anyhow!("usage: bench-seed DATABASE_URL AUDIT_KEY_FILE"))?;
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    let audit_key =
        safehand_server::audit::load_or_create_key(std::path::Path::new(&audit_key_file), &db)
            .await?;
    let db = db.with_audit_key(audit_key);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let op = Actor::operator();
    let (sam, _) = accounts::create(
        &db,
        now,
        &op,
        "bench.sender@school.sch.uk",
        "Bench Sender",
        &[Role::Staff, Role::Admin],
    )
    .await?;
    let contact = contacts::create(
        &db,
        now,
        &op,
        &ContactInput {
            email: "bench.recipient@northshire.gov.uk".into(),
            name: "Bench Recipient".into(),
            organisation: "Northshire Children's Services".into(),
            job_title: "Social worker".into(),
            phone: "01632 960 123".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    contacts::verify(
        &db,
        now,
        &op,
        contact.id,
        &VerificationInput {
            phone_called: "01632 960 123".into(),
            phone_source: "switchboard".into(),
            note: "Benchmark contact, checked through the switchboard.".into(),
        },
        &safehand_server::policy::Policy::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut tx = db.begin().await?;
    let (token, _) = safehand_server::tokens::create(
        &mut tx,
        now,
        sam.id,
        "benchmark",
        &[Role::Staff, Role::Admin],
        1,
    )
    .await?;
    tx.commit().await?;
    db.close().await;
    println!("{token} {}", contact.id);
    Ok(())
}
