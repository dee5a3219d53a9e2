//! Configuration: the file shape ([`file`]), its units ([`units`]), loading with
//! `${VAR}` substitution and located errors ([`load`]), and every rule of SPEC §3
//! ([`validate`]). The validated [`file::FileConfig`] is compiled into the runtime
//! [`crate::settings::Settings`] elsewhere.

pub mod file;
pub mod units;

// TEMPORARY until the loader lands (branch `config`).
#[derive(Debug)]
pub struct Loaded {
    pub config: file::FileConfig,
    pub warnings: Vec<String>,
    pub base_dir: std::path::PathBuf,
}
pub fn load_path(path: &std::path::Path) -> Result<Loaded, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![e.to_string()])?;
    let config = serde_saphyr::from_str(&text).map_err(|e| vec![e.to_string()])?;
    Ok(Loaded { config, warnings: vec![], base_dir: path.parent().map(|p| p.to_path_buf()).unwrap_or_default() })
}
