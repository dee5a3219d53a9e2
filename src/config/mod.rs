//! Configuration: the file shape ([`file`](mod@file)), its units ([`units`]), loading with `${VAR}`
//! substitution and located errors ([`load`]), and every rule of SPEC §3 ([`validate`]).
//! [`defaults`] holds the values of keys left out. The validated [`file::FileConfig`] is
//! compiled into the runtime settings elsewhere.
//!
//! Entry points: [`load_path`] for a file on disk, [`load_str`] for text (tests, reload from
//! memory). Both return every problem at once as a [`Diagnostic`] (`FILE:LINE:COL: message`).

pub mod defaults;
mod env;
pub mod file;
pub mod load;
mod locate;
mod schema;
mod summary;
pub mod units;
pub mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use load::{Diagnostic, Loaded, MAX_CONFIG_BYTES, load_path, load_str};
pub use summary::summary;
