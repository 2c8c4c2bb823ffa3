//! `safehand-server`: reads configuration, sets up logging, serves.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("Safehand is listening on http://{}", listener.local_addr()?);
    axum::serve(listener, safehand_server::app()).await?;
    Ok(())
}
