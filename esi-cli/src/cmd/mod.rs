//! One module per subcommand.

pub mod doctor;
pub mod exec;
pub mod fetch;
pub mod init;
pub mod refresh;
pub mod revoke;
