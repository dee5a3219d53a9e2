//! Configuration: the file shape ([`file`]), its units ([`units`]), loading with
//! `${VAR}` substitution and located errors ([`load`]), and every rule of SPEC §3
//! ([`validate`]). The validated [`file::FileConfig`] is compiled into the runtime
//! [`crate::settings::Settings`] elsewhere.

pub mod file;
pub mod units;
