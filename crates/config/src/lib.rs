//! Epistle's configuration library.
//!
//! - [`params`]: the one registry of configuration parameters.
//! - [`conffile`]: the `name = value` file format (pure).
//! - [`store`]: site files on disk (locked, atomic) and the effective
//!   [`Config`].
//! - [`paths`]: the `msg_svr_base` layout.
//! - [`services`]: the services start-msg knows, in start order.

pub mod conffile;
pub mod params;
pub mod paths;
pub mod services;
pub mod store;

pub use paths::MsgSvrBase;
pub use store::{Config, ConfigError, ConfigFiles, write_atomically};
