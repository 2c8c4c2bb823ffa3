//! One module per subcommand, each with its own `run()`.

pub mod audit;
pub mod cert;
pub mod decrypt;
pub mod devices;
pub mod encrypt;
pub mod fetch;
pub mod keygen;
pub mod list;
pub mod open;
pub mod passphrase;
pub mod seal;
pub mod send;
pub mod transfers;
pub mod verify;
pub mod wipe;
